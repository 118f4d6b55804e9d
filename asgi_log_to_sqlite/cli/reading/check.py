"""``check``: whether a log file is healthy, one line per check, and exit 1 when something is wrong."""
from __future__ import annotations

import json
import os
import sqlite3
import sys
from typing import List, Optional

import click

from ... import SCHEMA_VERSION, retention, rollups, toplists
from .. import cli
from ..output import emit, iso_ms, open_log, output_options
from .reasons import meaning

# The writer truncates its WAL back to 4 MB after each checkpoint: one this large means checkpoints
# cannot finish.
_WAL_WARNING_BYTES = 64 * 1024 * 1024


def _checks(conn: sqlite3.Connection, file: str, full: bool, max_size_mb: Optional[float]) -> List[tuple]:
    """(check, status, detail) rows, each status "ok", "warning" or "problem"."""
    found: List[tuple] = []
    checks = [("integrity", lambda: [_integrity_check(conn, file, full)]), ("schema", lambda: [_schema_check(conn, file)]),
              ("lost rows", lambda: _counter_checks(conn)), ("wal", lambda: [_wal_check(file)]),
              ("free space", lambda: [_vacuum_check(conn, file)]), ("size", lambda: [_size_check(conn, file, max_size_mb)]),
              ("retention", lambda: [_retention_check(conn)]), ("top lists", lambda: [_toplists_check(conn, file)]),
              ("rollups", lambda: [_rollups_check(conn, file)])]
    for name, run in checks:
        try:
            found += run()
        except sqlite3.DatabaseError as error:
            # A damaged file can fail any read: that is this check's finding, and the others still run.
            found.append((name, "problem", f"cannot be read: {error}"))
    return found


def _integrity_check(conn: sqlite3.Connection, file: str, full: bool) -> tuple:
    pragma = "integrity_check" if full else "quick_check"
    with _integrity_progress(conn, pragma):
        messages = [row[0] for row in conn.execute(f"PRAGMA {pragma}(20)")]
    if messages == ["ok"]:
        return ("integrity", "ok", f"PRAGMA {pragma}: ok")
    more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
    return ("integrity", "problem", f"PRAGMA {pragma}: {messages[0]}{more}; keep a copy, then save what can be "
            f"read with: sqlite3 {file} .recover | sqlite3 recovered.db")


def _schema_check(conn: sqlite3.Connection, file: str) -> tuple:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return ("schema", "ok", f"version {version}")
    if version > SCHEMA_VERSION:
        return ("schema", "problem", f"version {version}, written by a newer asgi_log_to_sqlite than this one "
                f"({SCHEMA_VERSION}): upgrade datasette-configure-asgi before logging to it")
    return ("schema", "warning", f"version {version}, this package writes {SCHEMA_VERSION}: the logger upgrades it "
            f"at its first request, or now with: python -c 'import asgi_log_to_sqlite as a; a.create_file(\"{file}\")'")


def _counter_checks(conn: sqlite3.Connection) -> List[tuple]:
    rows, kept = [], []
    for reason, count, last in conn.execute("SELECT reason, count, last_ms FROM log_counters ORDER BY count DESC"):
        said = meaning(reason)
        if said.startswith("lost") and count:
            rows.append((f"lost: {reason}", "warning", f"{count:,} rows, the last at {iso_ms(last)}: {said[6:]}"))
        elif count:
            kept.append(f"{reason} {count:,}")
    if not rows:
        rows.append(("lost rows", "ok", "none counted in log_counters"))
    if kept:
        rows.append(("not lost", "ok", "counted but not lost: " + ", ".join(kept)))
    return rows


def _wal_check(file: str) -> tuple:
    size = os.path.getsize(file + "-wal") if os.path.exists(file + "-wal") else 0
    detail = f"{size / 1024 / 1024:,.1f} MB"
    if size > _WAL_WARNING_BYTES:
        return ("wal", "warning", detail + ": checkpoints are falling behind; a reader holding a transaction "
                "open for long (a Datasette query, a backup) keeps it from being reset")
    return ("wal", "ok", detail)


def _vacuum_check(conn: sqlite3.Connection, file: str) -> tuple:
    mode = conn.execute("PRAGMA auto_vacuum").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    if mode:  # 2 incremental (what create_file sets), 1 full: either gives freed pages back
        kind = "incremental" if mode == 2 else "full"
        return ("free space", "ok", f"{kind} auto-vacuum; {free / 1024 / 1024:,.1f} MB free inside the file")
    return ("free space", "warning", f"auto_vacuum is none: space freed by pruning stays in the file "
            f"({free / 1024 / 1024:,.1f} MB free now); convert it once: asgi-log-to-sqlite vacuum {file}")


def _size_check(conn: sqlite3.Connection, file: str, max_size_mb: Optional[float]) -> tuple:
    # Pages in use, as retention counts them: free pages inside the file are room, not size.
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    used = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    size_mb = used * page_size / 1024 / 1024
    whose = "a"
    if max_size_mb is None:
        default = getattr(retention, "default_budget_mb", None)
        if default is None:
            return ("size", "ok", f"{size_mb:,.1f} MB in use; no budget given (--max-size-mb)")
        max_size_mb, whose = default(file), "the default"
    share = size_mb / max_size_mb
    detail = f"{size_mb:,.1f} MB in use of {whose} {max_size_mb:,g} MB budget ({share:.0%})"
    if share > 1:
        return ("size", "problem", detail + ": over it; new rows are dropped until pruning frees room")
    if share >= getattr(retention, "PRUNE_AT", 0.9):
        return ("size", "warning", detail + ": past the point where the logger prunes the oldest rows; "
                "it is not running, or cannot keep up (asgi-log-to-sqlite prune does it now)")
    return ("size", "ok", detail)


def _retention_check(conn: sqlite3.Connection) -> tuple:
    pruned = retention.pruned_rows(conn) if hasattr(retention, "pruned_rows") else 0
    key = getattr(retention, "META_LAST", None)
    row = conn.execute("SELECT value FROM log_meta WHERE key = ?", (key,)).fetchone() if key and _has_meta(conn) else None
    if row is None:
        return ("retention", "ok", f"{pruned:,} rows pruned so far" if pruned else "nothing pruned so far")
    last = json.loads(row[0])
    return ("retention", "ok", f"{pruned:,} rows pruned so far; the last round, at {iso_ms(last.get('at_ms'))}: "
            f"{last.get('rows', 0):,} rows, {last.get('lookups', 0):,} unused values, {last.get('pages_vacuumed', 0):,} "
            f"pages given back, the write lock held {last.get('longest_hold_ms', 0)} ms at most")


# Rows above the top lists' watermark past which readers notice: a live logger keeps it seconds behind.
_TOPLISTS_WARNING_ROWS = 100_000


def _toplists_check(conn: sqlite3.Connection, file: str) -> tuple:
    if not toplists.has_tables(conn):
        return ("top lists", "ok", "none yet (schema before version 4): the logger adds them")
    behind = toplists.behind(conn)
    if behind <= _TOPLISTS_WARNING_ROWS:
        return ("top lists", "ok", f"{behind:,} rows still to sum" if behind else "every row counted")
    return ("top lists", "warning", f"{behind:,} rows still to sum: queries read them raw, more slowly, until a "
            f"logger of the file sums them, or run: asgi-log-to-sqlite rollup {file} --rebuild")


# Rows above the rollups' watermark past which a warning is due: a live logger adds its every 2 s.
_ROLLUPS_WARNING_ROWS = 100_000


def _rollups_check(conn: sqlite3.Connection, file: str) -> tuple:
    if not rollups.WATERMARK.has_tables(conn):
        return ("rollups", "ok", "none yet (schema before version 2): the logger adds them")
    behind = rollups.WATERMARK.behind(conn)
    if behind <= _ROLLUPS_WARNING_ROWS:
        return ("rollups", "ok", f"{behind:,} rows still to sum" if behind else "every row counted")
    return ("rollups", "warning", f"{behind:,} rows still to sum: queries over the rollups miss them until a "
            f"logger of the file sums them, or run: asgi-log-to-sqlite rollup {file} --rebuild")


def _has_meta(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'log_meta'").fetchone() is not None


class _integrity_progress:
    """A progress bar during the integrity check on a terminal, estimated from SQLite's VM steps per page."""

    # Measured on log files: about 2,500 VM steps per full 4 KB page of request_log, the bulk of a
    # log; the bar is an estimate, and stops just short of the end until the check returns.
    _STEPS_PER_PAGE = 2_500
    _EVERY = 100_000

    def __init__(self, conn: sqlite3.Connection, pragma: str):
        self.conn, self.pragma = conn, pragma

    def __enter__(self):
        self.bar = None
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        stderr = sys.stderr
        if not stderr.isatty() or pages < 25_000:  # ~100 MB: quicker than a bar is worth
            return self
        self.bar = click.progressbar(length=pages, label=f"PRAGMA {self.pragma}", file=stderr).__enter__()
        self.step_pages = max(1, self._EVERY // self._STEPS_PER_PAGE)

        def advance():
            if self.bar.pos + self.step_pages < pages:
                self.bar.update(self.step_pages)
            return 0

        self.conn.set_progress_handler(advance, self._EVERY)
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.conn.set_progress_handler(None, 0)
            if exc[0] is None:
                self.bar.update(self.bar.length - self.bar.pos)  # done: the estimate gives way to the fact
            self.bar.__exit__(*exc)
        return False


@cli.command()
@click.argument("file")
@click.option("--max-size-mb", type=click.FloatRange(min=0, min_open=True), metavar="MB",
              help="The logger's max_size_mb; by default, the budget it takes without one (10% of the file system, "
                   "64 MB to 4 GB)")
@click.option("--full", is_flag=True, help="PRAGMA integrity_check (also checks every index) instead of quick_check")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too")
@output_options
def check(file: str, max_size_mb: Optional[float], full: bool, strict: bool, fmt: str) -> None:
    """Whether a log is healthy: integrity, schema version, rows lost, WAL, free space, size budget.

    Each check prints ok, warning or problem. Exit 1 on a problem (the file is damaged, unreadable
    or not a log, its schema is newer than this package, it is over the size budget); warnings
    (rows lost, an older schema, a large WAL, no incremental vacuum, near the budget) exit 0
    unless --strict.

    Example:

    \b
        asgi-log-to-sqlite check logs/requests.db --max-size-mb 500
    """
    conn = open_log(file)
    try:
        found = _checks(conn, file, full, max_size_mb)
    finally:
        conn.close()
    emit(found, ("check", "status", "detail"), fmt)
    statuses = {status for _, status, _ in found}
    if "problem" in statuses or (strict and "warning" in statuses):
        click.get_current_context().exit(1)
