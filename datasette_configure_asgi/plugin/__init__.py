"""The Datasette hooks: check the config at startup, wrap the app, show the chain, add the check command.

Kept apart from the package root so that ``datasette_configure_asgi.wrap`` works where Datasette is
not installed. A package rather than a module because Datasette only serves a plugin's templates/
folder when its entry point is a package.
"""
from __future__ import annotations

import weakref
from typing import Any, Optional, Tuple

import click
from datasette import hookimpl

from .. import PLUGIN_KEY
from ..chain import Chain, chain_for
from ..errors import ConfigError
from ..sources import Found, find_config

# Datasette instance -> (what was found, its chain). Looked up on every app() build.
_per_instance: "weakref.WeakKeyDictionary[Any, Tuple[Found, Optional[Chain]]]" = weakref.WeakKeyDictionary()


def configured_chain(datasette) -> Tuple[Found, Optional[Chain]]:
    """The config of this instance and its checked chain (None when nothing is configured).

    Raises click.ClickException, so that ``datasette serve`` and ``--get`` print ``Error: ...``
    and exit 1 instead of showing a traceback.
    """
    known = _per_instance.get(datasette)
    if known is not None:
        return known
    found = find_config(datasette)
    if found.warning:
        click.echo(f"Warning: {found.warning}", err=True)
    chain = None
    if found.raw is not None:
        chain = _exit_on_config_error(chain_for, found.raw, PLUGIN_KEY)
    _per_instance[datasette] = (found, chain)
    return found, chain


@hookimpl
def startup(datasette):
    found, chain = configured_chain(datasette)
    if chain is not None:
        _exit_on_config_error(chain.check)


@hookimpl
def asgi_wrapper(datasette):
    def wrap_with_configured_middleware(app):
        found, chain = configured_chain(datasette)
        if chain is None:
            return app
        return _exit_on_config_error(chain.wrap, app)

    return wrap_with_configured_middleware


@hookimpl
def register_routes():
    from ..introspect import middleware_page

    return [(r"^/-/asgi-middleware(?P<format>\.json)?$", middleware_page)]


@hookimpl
def register_commands(cli):
    from ..commands import configure_asgi

    cli.add_command(configure_asgi)


def _exit_on_config_error(function, *args):
    """Turn a ConfigError into click's one-line "Error: ..." and exit 1, as datasette's own errors do."""
    try:
        return function(*args)
    except ConfigError as error:
        raise click.ClickException(error.format()) from None
