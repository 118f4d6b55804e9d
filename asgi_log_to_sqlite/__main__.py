"""``python -m asgi_log_to_sqlite``: the same command line as the ``asgi-log-to-sqlite`` script."""
from .cli import cli

cli(prog_name="asgi-log-to-sqlite")
