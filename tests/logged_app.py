"""The Starlette example wrapped in the logger, for `uvicorn logged_app:app --workers N` (LOG_FILE names the file)."""
import os

from datasette_configure_asgi import wrap
from examples.starlette.app import app as starlette_app

app = wrap(starlette_app, [{"class": "asgi_log_to_sqlite.AsgiLogToSqlite", "args": {"file": os.environ["LOG_FILE"]}}])
