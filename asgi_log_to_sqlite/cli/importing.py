"""``asgi-log-to-sqlite import``: nginx and Apache access logs into a log database (importer.py)."""
from __future__ import annotations

import json
import os
import sqlite3
import sys
from typing import List, Tuple

import click

from .. import create_file, importer, toplists
from ..failures import is_locked
from . import cli
from .output import emit, open_log, output_options

_COLUMNS = ("log", "lines", "imported", "already_imported", "unparsed")


@cli.command(name="import")
@click.argument("file")
@click.argument("logs", nargs=-1, required=True, metavar="LOG...")
@click.option("--format", "log_format", default="auto", show_default=True,
              help="combined, common, or auto (each line as combined, else common)")
@click.option("--client-ip", type=click.Choice(("truncate", "full", "none")), default="truncate", show_default=True,
              help="Client addresses as the logger stores them: truncated to /24 (IPv4) and /48 (IPv6), whole, or not at all")
@click.option("--redact-params", multiple=True, metavar="NAMES",
              help="More query parameters whose values are stored as REDACTED (comma-separated, or repeated)")
@click.option("--visitors", is_flag=True,
              help="Count distinct visitors of past days in the rollups too (slower; see docs/import.md)")
@output_options
def import_(file: str, logs: Tuple[str, ...], log_format: str, client_ip: str, redact_params: Tuple[str, ...],
            visitors: bool, fmt: str) -> None:
    """Import nginx or Apache access logs (combined or common format, plain or gzipped) into FILE.

    LOG may be "-" for standard input. A log imported before is not imported twice: one that
    grew since goes on after its last imported line, and a gzipped copy is recognised.

    Example:

        asgi-log-to-sqlite import requests.db /var/log/nginx/access.log*
    """
    for log in logs:
        if log != "-" and not os.path.exists(log):
            raise click.ClickException(f"{log}: no such file")
        if os.path.isdir(log):
            raise click.ClickException(f"{log}: is a directory; give an access log file")
    if logs.count("-") > 1:
        raise click.ClickException('"-" (standard input) can be given once')
    if log_format not in importer.FORMATS:
        raise click.ClickException(f"--format {log_format!r}: expected one of {', '.join(importer.FORMATS)}")
    names = [name.strip() for option in redact_params for name in option.split(",") if name.strip()]
    if os.path.exists(file):
        open_log(file, write=True).close()  # one line when it is not a log database
    else:
        try:
            create_file(file)
        except ValueError as error:
            raise click.ClickException(str(error))
    sizes = [0 if log == "-" else os.path.getsize(log) for log in logs]
    results: List[importer.ImportResult] = []
    try:
        with importer.Importer(file, log_format=log_format, client_ip=client_ip, redact_params=names,
                               visitors=visitors) as running:
            # On stderr, so that --json and --csv output stays clean on stdout.
            with click.progressbar(length=max(1, sum(sizes)), label="Importing", file=sys.stderr,
                                   hidden=not sum(sizes) or not sys.stderr.isatty()) as bar:
                for log, size in zip(logs, sizes):
                    done = [0]

                    def advance(position: int, done=done, size=size) -> None:
                        position = min(position, size)
                        if position > done[0]:
                            bar.update(position - done[0])
                            done[0] = position

                    results.append(running.import_log(log, advance))
                    advance(size)
            # The top lists count the imported rows now, not when a logger of the file next catches up
            # (which it does if another process holds the lock too long here).
            try:
                toplists.catch_up(running.conn)
            except sqlite3.OperationalError as error:
                if not is_locked(error):
                    raise
    except importer.LogError as error:
        raise click.ClickException(str(error))
    _report(results, fmt)


def _report(results: List[importer.ImportResult], fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([{
            "log": r.log, "lines": r.lines, "imported": r.imported, "already_imported": r.already_imported,
            "unparsed": r.unparsed, "unparsed_lines": [{"line": n, "text": text} for n, text in r.unparsed_lines],
            "held": r.held,
        } for r in results], indent=2))
        return
    rows = [(r.log, r.lines, r.imported, r.already_imported, r.unparsed) for r in results]
    if len(results) > 1:
        rows.append(("total",) + tuple(sum(row[i] for row in rows) for i in range(1, len(_COLUMNS))))
    emit(rows, _COLUMNS, fmt)
    if fmt != "table":
        return
    for r in results:
        for number, text in r.unparsed_lines:
            click.echo(f"{r.log}:{number}: unparsed: {text}", err=True)
        if r.unparsed > len(r.unparsed_lines):
            click.echo(f"{r.log}: {r.unparsed - len(r.unparsed_lines)} more unparsed line(s)", err=True)
        if r.held:
            click.echo(f"{r.log}: its last line has no newline yet (still being written?); "
                       "the next import reads it", err=True)
