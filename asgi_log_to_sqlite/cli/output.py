"""What every command shares: opening a log file, reading times, showing progress, and printing rows
as a table, JSON or CSV."""
from __future__ import annotations

import contextlib
import csv
import datetime
import json
import os
import pathlib
import re
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence

import click

from ..rotation import DatedPath, is_dated


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
        for line in table_lines(rows, columns):
            click.echo(line)


def table_lines(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> List[str]:
    """``rows`` as aligned text lines under a header: numbers right-aligned with thousands separators."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(column)] + [len(row[i]) for row in cells]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths)).rstrip(),
             "  ".join("-" * width for width in widths)]
    for row in cells:
        lines.append("  ".join(value.rjust(width) if _numeric(value) else value.ljust(width)
                               for value, width in zip(row, widths)).rstrip())
    return lines


@dataclass
class Section:
    """One titled part of a report: either name/value ``pairs`` or ``rows`` under ``columns``."""

    key: str                      # its name in --json and --csv
    title: str                    # its heading in the table output
    columns: Sequence[str] = ()
    rows: List[Sequence[Any]] = field(default_factory=list)
    pairs: Optional[dict] = None  # set for a name -> value section instead of rows
    note: str = ""                # said under the heading in the table output only


def emit_sections(sections: Sequence[Section], fmt: str, header: Optional[dict] = None) -> None:
    """Print a report: titled tables; one JSON object (``header`` then a key per section); or CSV rows.

    CSV is long and flat, one value per line: ``section,key,metric,value``, where ``key`` is the
    row's first column (empty in a name/value section) and ``metric`` the column or name; the
    ``header`` comes first, as section ``report``.
    """
    if fmt == "json":
        document = dict(header or {})
        for section in sections:
            if section.pairs is not None:
                document[section.key] = section.pairs
            else:
                document[section.key] = [dict(zip(section.columns, row)) for row in section.rows]
        click.echo(json.dumps(document, indent=2, default=str))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(("section", "key", "metric", "value"))
        for name, value in (header or {}).items():
            writer.writerow(("report", "", name, value))
        for section in sections:
            if section.pairs is not None:
                writer.writerows((section.key, "", name, value) for name, value in section.pairs.items())
                continue
            for row in section.rows:
                writer.writerows((section.key, row[0], metric, value) for metric, value in zip(section.columns[1:], row[1:]))
    else:
        for number, section in enumerate(sections):
            if number:
                click.echo()
            click.secho(section.title, bold=True)
            if section.note:
                click.echo(section.note)
            if section.pairs is not None:
                width = max((len(name) for name in section.pairs), default=0)
                for name, value in section.pairs.items():
                    click.echo(f"  {name.replace('_', ' ').ljust(width)}  {_cell(value)}")
            elif section.rows:
                for line in table_lines(section.rows, section.columns):
                    click.echo("  " + line)
            else:
                click.echo("  (none)")


def open_log(path: str, *, write: bool = False) -> sqlite3.Connection:
    """A connection to an existing log file, or one line saying why there is none (exit 1).

    Read-only unless ``write``; autocommit (isolation_level=None), busy_timeout 5 s.
    """
    if not os.path.exists(path):
        if is_dated(path):
            existing = DatedPath(path).existing()
            newest = f" (the newest: {existing[-1]})" if existing else " (it has made none yet)"
            raise click.ClickException(f"{path}: a dated pattern names many files; give one of them{newest}")
        raise click.ClickException(f"{path}: no such file")
    if os.path.isdir(path):
        raise click.ClickException(f"{path}: is a directory; give the log database file")
    # A URI built from the absolute path, so that '?', '#' or '%' in a file name stay part of the name.
    uri = pathlib.Path(path).absolute().as_uri() + ("?mode=rw" if write else "?mode=ro")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        conn.close()
        if "not a database" in str(error):
            raise click.ClickException(f"{path}: not a SQLite database ({error})")
        raise click.ClickException(f"{path}: cannot be read ({error})")
    if "request_log" not in tables:
        conn.close()
        if "requests" in tables:
            raise click.ClickException(
                f"{path}: an asgi-log-to-sqlite 0.1.1 log; upgrade it first (the logger does at its first request, or: "
                f"python -c 'import asgi_log_to_sqlite as a; a.create_file(\"{path}\")')")
        raise click.ClickException(f"{path}: not a request log (it has no request_log table)")
    return conn


# ---- times ------------------------------------------------------------------------------------

_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.I)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TIME_FORMS = "an ISO date or time (2024-05-01, 2024-05-01T12:30, 2024-05-01T12:30:00+02:00) or an age (90m, 24h, 7d, 2w)"


def parse_time(text: str, *, end: bool = False, now_ms: Optional[int] = None) -> int:
    """Milliseconds since the epoch for an ISO date or time (UTC unless it says otherwise) or an age ago.

    ``end``: a bare date means the end of that day (the start of the next), so ``--until 2024-05-31``
    includes the 31st. Raises ValueError quoting ``text`` and the forms expected.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    age = _AGE.match(text)
    if age:
        return now_ms - int(float(age.group(1)) * _AGE_UNITS[age.group(2).lower()] * 1000)
    if text.strip().lower() == "now":
        return now_ms
    cleaned = text.strip()
    if cleaned[-1:] in ("Z", "z"):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", cleaned):
            moment = datetime.datetime.combine(datetime.date.fromisoformat(cleaned), datetime.time())
            if end:
                moment += datetime.timedelta(days=1)
        else:
            moment = datetime.datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"{text!r}: expected {TIME_FORMS}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp() * 1000)


def time_option(name: str, *, end: bool, help: str) -> Callable:
    """A --since/--until style option: the command receives epoch milliseconds, or None when not given.

    A value that is not a time is a one-line error (exit 1) quoting it and the forms accepted.
    """
    def convert(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[int]:
        if value is None:
            return None
        try:
            return parse_time(value, end=end)
        except ValueError as error:
            raise click.ClickException(f"{name} {error}") from None

    return click.option(name, callback=convert, metavar="WHEN", help=help)


def iso_ms(ms: Optional[float]) -> Optional[str]:
    """Epoch milliseconds as an ISO 8601 UTC time to the millisecond, like readable_requests.start."""
    if ms is None:
        return None
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# ---- progress ---------------------------------------------------------------------------------

@contextlib.contextmanager
def progress(items: Sequence[Any], label: str) -> Iterator[Iterable[Any]]:
    """``items`` under a click progress bar on stderr when it is a terminal; silent otherwise.

    On stderr so that --json and --csv output stay clean when piped.
    """
    stderr = sys.stderr
    if not stderr.isatty():
        yield items
        return
    with click.progressbar(items, label=label, file=stderr) as bar:
        yield bar


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # Up to three decimals, trailing zeros dropped: 16.7, 0.042, 1,250.5
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return bool(text) and text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()
