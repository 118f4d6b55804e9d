"""The Datasette hooks: check the config at startup, wrap the app, show the chain, add the check command.

Kept apart from the package root so that ``datasette_configure_asgi.wrap`` works where Datasette is
not installed. A package rather than a module because Datasette only serves a plugin's templates/
folder when its entry point is a package. The work is done in the modules beside this one:
``state`` (the config of each instance), ``page`` and ``commands``.
"""
from __future__ import annotations

from datasette import hookimpl

from .commands import configure_asgi
from .page import ROUTE, middleware_page
from .state import configured_chain, exit_on_config_error


@hookimpl
def startup(datasette):
    found, chain = configured_chain(datasette)
    if chain is not None:
        exit_on_config_error(chain.check)


@hookimpl
def asgi_wrapper(datasette):
    def wrap_with_configured_middleware(app):
        found, chain = configured_chain(datasette)
        if chain is None:
            return app
        return exit_on_config_error(chain.wrap, app)

    return wrap_with_configured_middleware


@hookimpl
def register_routes():
    return [(ROUTE, middleware_page)]


@hookimpl
def register_commands(cli):
    cli.add_command(configure_asgi)
