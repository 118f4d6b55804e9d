from .serve import cli

cli(prog_name="python -m datasette_configure_asgi")
