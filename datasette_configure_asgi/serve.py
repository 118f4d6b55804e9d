"""`python -m datasette_configure_asgi serve module:app --config middleware.json`: any ASGI app, wrapped, under uvicorn."""
from __future__ import annotations

import click

from .chain import chain_for
from .config_file import LIST_KEY, load_entries
from .describe import chain_text
from .errors import ConfigError


def _load_chain(config_path: str):
    try:
        return chain_for(load_entries(config_path), where=_where(config_path))
    except ConfigError as error:
        raise click.ClickException(error.format()) from None


def _where(config_path: str) -> str:
    return f"{config_path}:{LIST_KEY}" if config_path.endswith(".toml") else config_path


@click.group()
def cli():
    """Wrap any ASGI app in a checked middleware list."""


@cli.command()
@click.argument("app")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="Middleware list: .json, .yaml or .toml")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind socket to this host")
@click.option("--port", default=8000, show_default=True, type=int, help="Bind socket to this port")
@click.option("--uds", default=None, help="Bind to a UNIX domain socket instead")
@click.option("--lifespan", default="auto", show_default=True, type=click.Choice(["auto", "on", "off"]))
@click.option("--log-level", default="info", show_default=True)
@click.option("--no-access-log", is_flag=True, help="Turn off uvicorn's access log")
def serve(app, config_path, host, port, uds, lifespan, log_level, no_access_log):
    """Serve APP (module:attribute) under uvicorn, wrapped in the middleware listed in --config."""
    import uvicorn
    from uvicorn.importer import ImportFromStringError, import_from_string

    chain = _load_chain(config_path)
    try:
        inner = import_from_string(app)
    except ImportFromStringError as error:
        raise click.ClickException(str(error)) from None
    try:
        wrapped = chain.wrap(inner)
    except ConfigError as error:
        raise click.ClickException(error.format()) from None
    uvicorn.run(
        wrapped,
        host=host,
        port=port,
        uds=uds,
        lifespan=lifespan,
        log_level=log_level,
        access_log=not no_access_log,
    )


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False))
def check(config_path):
    """Check a middleware list and print the chain, outermost first, without serving."""
    chain = _load_chain(config_path)
    try:
        chain.check()
    except ConfigError as error:
        raise click.ClickException(error.format()) from None
    click.echo(chain_text(chain, config_path, _where(config_path)))
