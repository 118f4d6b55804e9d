"""What every command shares: opening a log file, and printing rows as a table, JSON or CSV."""
from __future__ import annotations

import csv
import json
import os
import sqlite3
import sys
from typing import Any, Callable, Iterable, Sequence

import click


def output_options(command: Callable) -> Callable:
    """Add --json and --csv to a command; it receives ``fmt`` ("table", "json" or "csv")."""
    command = click.option("--csv", "fmt", flag_value="csv", help="Output CSV")(command)
    command = click.option("--json", "fmt", flag_value="json", help="Output JSON")(command)
    command = click.option("--table", "fmt", flag_value="table", default=True, hidden=True)(command)
    return command


def emit(rows: Iterable[Sequence[Any]], columns: Sequence[str], fmt: str) -> None:
    """Print ``rows`` (sequences in ``columns`` order) as an aligned table, a JSON array or CSV."""
    rows = [list(row) for row in rows]
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, row)) for row in rows], indent=2, default=str))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        cells = [[_cell(value) for value in row] for row in rows]
        widths = [max([len(column)] + [len(row[i]) for row in cells]) for i, column in enumerate(columns)]
        click.echo("  ".join(column.ljust(width) for column, width in zip(columns, widths)).rstrip())
        click.echo("  ".join("-" * width for width in widths))
        for row in cells:
            click.echo("  ".join(value.rjust(width) if _numeric(value) else value.ljust(width)
                                 for value, width in zip(row, widths)).rstrip())


def open_log(path: str, *, write: bool = False) -> sqlite3.Connection:
    """A connection to an existing log file, or one line saying why there is none (exit 1)."""
    if not os.path.exists(path):
        raise click.ClickException(f"{path}: no such file")
    if os.path.isdir(path):
        raise click.ClickException(f"{path}: is a directory; give the log database file")
    mode = "rw" if write else "ro"
    try:
        conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, isolation_level=None, timeout=5)
        conn.execute("PRAGMA busy_timeout = 5000")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise click.ClickException(f"{path}: not a SQLite database ({error})")
    if "request_log" not in tables:
        raise click.ClickException(f"{path}: not a request log (it has no request_log table)")
    return conn


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()
