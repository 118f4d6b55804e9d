"""``tail``: the last rows of a log, readable like an access log, and with ``-f`` the rows as they arrive."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import threading
import time
from typing import List, Optional, Sequence, Tuple

import click

from ...files import file_identity
from ...rotation import DatedPath, is_dated
from .. import cli
from ..output import iso_ms, open_log, output_options

_TAIL_SQL = """
SELECT r.id, r.start_ms, coalesce(fip.name, ip.name), m.name, h.name, p.name, q.name, r.http_status,
    r.body_size, r.duration_us, ua.name, ref.name
FROM request_log r
LEFT JOIN methods m ON m.id = r.method_id
LEFT JOIN hosts h ON h.id = r.host_id
LEFT JOIN paths p ON p.id = r.path_id
LEFT JOIN query_strings q ON q.id = r.query_string_id
LEFT JOIN client_ips ip ON ip.id = r.client_ip_id
LEFT JOIN client_ips fip ON fip.id = r.forwarded_ip_id
LEFT JOIN user_agents ua ON ua.id = r.user_agent_id
LEFT JOIN referers ref ON ref.id = r.referer_id
"""
_TAIL_COLUMNS = ("id", "start", "client_ip", "method", "host", "path", "query_string", "http_status",
                 "body_size", "duration_ms", "user_agent", "referer")
_STATUS_COLOURS = {2: "green", 3: "cyan", 4: "yellow", 5: "red"}


class _Stopped(Exception):
    """SIGTERM arrived while following."""


def _status_filter(values: Sequence[str]) -> Tuple[str, list]:
    """SQL for --status values (classes like 4xx or codes like 404), or a one-line error quoting the bad one."""
    clauses, params = [], []
    for value in values:
        text = value.strip().lower()
        if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
            clauses.append("r.http_status BETWEEN ? AND ?")
            params += [int(text[0]) * 100, int(text[0]) * 100 + 99]
        elif text.isdigit() and 100 <= int(text) <= 599:
            clauses.append("r.http_status = ?")
            params.append(int(text))
        else:
            raise click.ClickException(f"--status {value!r}: expected a class (1xx, 2xx, 3xx, 4xx, 5xx) or a code like 404")
    return "(" + " OR ".join(clauses) + ")", params


def _glob_prefix(prefix: str) -> str:
    # GLOB rather than LIKE: case-sensitive like paths, and the unique index on paths.name serves it.
    return "".join(f"[{c}]" if c in "*?[" else c for c in prefix) + "*"


def _tail_line(row: tuple, fmt: str) -> str:
    values = dict(zip(_TAIL_COLUMNS, row))
    values["start"] = iso_ms(values["start"])
    values["duration_ms"] = None if values["duration_ms"] is None else round(values["duration_ms"] / 1000, 3)
    if fmt == "json":
        return json.dumps(values)
    query = values["query_string"] or ""
    target = (values["path"] or "-") + (query if query.startswith("?") or not query else "?" + query)
    status = values["http_status"]
    shown = click.style(str(status), fg=_STATUS_COLOURS.get(status // 100)) if status else "-"
    ms = values["duration_ms"]
    duration = "-" if ms is None else f"{ms:.1f}ms" if ms >= 1 else f"{ms:.3f}ms"
    return (f"{values['start']} {values['client_ip'] or '-'} {values['method'] or '-'} {target} {shown} "
            f"{values['body_size'] if values['body_size'] is not None else '-'} {duration} "
            f"{json.dumps(values['user_agent'] or '-', ensure_ascii=False)}")


class _Follower:
    """Reads a log's rows past the last id shown; follows the file at the path, or a dated pattern's newest file."""

    def __init__(self, file: str, where: str, params: list):
        self.file, self.where, self.params = file, where, params
        self.dated = DatedPath(file) if is_dated(file) else None
        self.conn: Optional[sqlite3.Connection] = None
        self.path: Optional[str] = None
        self.identity = None
        self.last_id = 0

    def target(self) -> str:
        """The file to read now: the path, or the pattern's file for this moment, or else its newest one."""
        if self.dated is None:
            return self.file
        current = self.dated.path_for(time.time() * 1000)
        if os.path.exists(current):
            return current
        existing = self.dated.existing()
        return existing[-1] if existing else current

    def open(self) -> None:
        path = self.target()
        self.conn, self.path, self.identity, self.last_id = open_log(path), path, file_identity(path), 0

    def newest(self, count: int) -> List[tuple]:
        """The last ``count`` matching rows, oldest first; later reads start after every row there is now."""
        self.conn.execute("BEGIN")
        try:
            self.last_id = self.conn.execute("SELECT coalesce(max(id), 0) FROM request_log").fetchone()[0]
            if count == 0:
                return []
            found = self.conn.execute(f"{_TAIL_SQL} WHERE {self.where} ORDER BY r.id DESC LIMIT ?",
                                      self.params + [count]).fetchall()
            return found[::-1]
        finally:
            self.conn.execute("COMMIT")

    def new_rows(self) -> List[tuple]:
        """Matching rows written since the last read (up to the newest id, so a rare match costs no rescans)."""
        if self.conn is None:
            return []
        self.conn.execute("BEGIN")
        try:
            top = self.conn.execute("SELECT coalesce(max(id), 0) FROM request_log").fetchone()[0]
            found = self.conn.execute(f"{_TAIL_SQL} WHERE r.id > ? AND r.id <= ? AND {self.where} ORDER BY r.id",
                                      [self.last_id, top] + self.params).fetchall()
            self.last_id = top
            return found
        finally:
            self.conn.execute("COMMIT")

    def switched(self) -> bool:
        """Move to the file there is now when it is another one (a new period's, or the file replaced at
        the path), to be read from its first row; True when it moved."""
        path = self.target()
        if self.conn is not None and path == self.path and file_identity(path) == self.identity:
            return False
        # Closed first: a file replaced by rename leaves the old one's -wal and -shm at the path,
        # and two connections must not share them for two different databases.
        self.close()
        try:
            self.open()
        except click.ClickException:
            return False  # not there yet, or not a log yet: look again at the next read
        return True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@cli.command()
@click.argument("file")
@click.option("-n", "--lines", "count", default=10, show_default=True, type=click.IntRange(min=0),
              help="Show the last N rows first")
@click.option("-f", "--follow", is_flag=True, help="Keep printing rows as they are written, until Ctrl-C")
@click.option("--status", "statuses", multiple=True, metavar="CLASS|CODE",
              help="Only these statuses: 2xx, 3xx, 4xx, 5xx or a code like 404 (repeat for several)")
@click.option("--path-prefix", metavar="PREFIX", help="Only paths starting with PREFIX, for example /api")
@click.option("--interval", default=0.5, show_default=True, type=click.FloatRange(min=0.05), metavar="SECONDS",
              help="How often --follow reads the file")
@output_options
def tail(file: str, count: int, follow: bool, statuses: Sequence[str], path_prefix: Optional[str],
         interval: float, fmt: str) -> None:
    """The last rows of a log, like an access log, newest last; with -f, new rows as they arrive.

    Each line: time (UTC), client, method, path?query, status, bytes, duration, agent. --json prints
    one JSON object per line. FILE may be a dated pattern ('logs/requests-%Y-%m.db'): tail reads its
    newest file, and -f moves on to each new period's file. Ctrl-C or SIGTERM stops -f (exit 0).

    Example:

    \b
        asgi-log-to-sqlite tail logs/requests.db -f --status 5xx --path-prefix /api
    """
    clauses, params = ["1"], []
    if statuses:
        clause, params = _status_filter(statuses)
        clauses.append(clause)
    if path_prefix:
        clauses.append("r.path_id IN (SELECT id FROM paths WHERE name GLOB ?)")
        params.append(_glob_prefix(path_prefix))
    follower = _Follower(file, " AND ".join(clauses), params)
    follower.open()
    if fmt == "csv":
        click.echo(",".join(_TAIL_COLUMNS))
    try:
        with _stop_on_sigterm():
            _show(follower.newest(count), fmt)
            while follow:
                time.sleep(interval)
                try:
                    _show(follower.new_rows(), fmt)
                except sqlite3.DatabaseError:
                    pass  # the file went away under us: the switch below finds the one there now
                if follower.switched():
                    _show(follower.new_rows(), fmt)
    except (KeyboardInterrupt, _Stopped):
        pass  # the way to stop following: not an error
    finally:
        follower.close()


def _show(found: List[tuple], fmt: str) -> None:
    for row in found:
        if fmt == "csv":
            click.echo(_csv_line(row))
        else:
            click.echo(_tail_line(row, fmt))


def _csv_line(row: tuple) -> str:
    values = list(row)
    values[1] = iso_ms(values[1])
    values[9] = None if values[9] is None else round(values[9] / 1000, 3)
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(values)
    return out.getvalue()


class _stop_on_sigterm:
    """While following, SIGTERM ends the loop like Ctrl-C does (the previous handler comes back after)."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise _Stopped()

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


