"""``asgi-log-to-sqlite``: look at, maintain and import request logs from the command line.

A thin click layer, in the manner of sqlite-utils: each command calls the module that does the
work (retention, rotation, rollups, importer) and prints its result; a user error is one line and
exit status 1 (click.ClickException), never a traceback.
"""
from __future__ import annotations

import importlib
import sqlite3

import click


class _Command(click.Command):
    """A command whose SQLite errors no code foresaw are still one line and exit 1, naming the file."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except sqlite3.Error as error:
            # A file that turns out damaged, or locked past busy_timeout, midway through a command.
            file = ctx.params.get("file")
            where = file if isinstance(file, str) else "SQLite"
            raise click.ClickException(f"{where}: {error}") from None


class _Group(click.Group):
    command_class = _Command


@click.group(cls=_Group)
@click.version_option(package_name="datasette-configure-asgi", prog_name="asgi-log-to-sqlite")
def cli() -> None:
    """Look at, maintain and import the SQLite request logs that AsgiLogToSqlite writes.

    Example:

    \b
        asgi-log-to-sqlite stats logs/requests.db
    """


# Each module adds its own commands to the group.
for _module in ("reading", "maintenance", "files", "rollup", "agents", "importing"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{_module}":
            raise
