"""Pruning's mechanics: delete rows and unused lookup values in paced transactions, give pages back.

retention.py decides what goes and when; this module does it. Every change is one ``BEGIN
IMMEDIATE`` ... ``COMMIT`` of a bounded id range, sized from the previous one to hold the write
lock for about HOLD_TARGET_S. A writer in another process waits that long at most, and holds its
batch for a retry if it ever waits longer, so pruning costs no rows.

It also keeps the bookkeeping in log_meta (rows pruned ever, the lookup generation writers check
their cached ids against, the last round's summary), gives free pages back with ``PRAGMA
incremental_vacuum``, and converts a file made without incremental vacuum once.
"""
from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from . import rollups, route_summaries, toplists

HOLD_TARGET_S = 0.005    # each write transaction aims at holding the lock this long
CHECKPOINT_FRAMES = 1000  # pages in the -wal between checkpoints, as SQLite's auto-checkpoint has it
LEGACY = "requests_0_1"
META_PRUNED = "retention.pruned_rows"            # log_meta: rows retention has deleted, ever
META_GENERATION = "retention.lookup_generation"  # log_meta: bumped whenever lookup rows are deleted
META_LAST = "retention.last_prune"               # log_meta: JSON summary of the last round that did anything
Progress = Callable[[str, int, int], None]       # (phase, done, total)


@dataclass
class Report:
    """What one round of pruning did."""

    rows: int = 0                  # request rows deleted, request_log and requests_0_1
    legacy_rows: int = 0           # of those, rows of the 0.1.1 table requests_0_1
    rollup_rows: int = 0           # rollup rows deleted: only past the size budget, once no raw row is left
    lookups: Dict[str, int] = field(default_factory=dict)  # lookup table -> values deleted
    pages_vacuumed: int = 0        # pages given back to the file system
    bytes_before: int = 0          # page_count x page_size when the round began
    bytes_after: int = 0
    transactions: int = 0
    longest_hold: float = 0.0      # seconds, the longest BEGIN IMMEDIATE -> COMMIT of the round
    seconds: float = 0.0           # working time (the writer's slices added up)
    incremental: bool = True       # auto_vacuum=INCREMENTAL; without it freed pages stay in the file

    def did_something(self) -> bool:
        return bool(self.rows or self.rollup_rows or sum(self.lookups.values()) or self.pages_vacuumed)


class Pace:
    """Times each write transaction, sizes the next, and tells a slice when its time is up."""

    def __init__(self, conn: sqlite3.Connection, report: Report, sizes: Dict[str, int],
                 deadline: float = math.inf, progress: Optional[Progress] = None):
        self.conn = conn
        self.report = report
        self.sizes = sizes  # kind -> units per transaction, kept from one slice to the next
        self.deadline = deadline
        self.progress = progress
        self.since_checkpoint = 0
        self.checkpoint_every = 1  # transactions, resized so that about CHECKPOINT_FRAMES build up in between

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline

    @contextlib.contextmanager
    def transaction(self, kind: str, first: int, lowest: int, highest: int) -> Iterator[List[int]]:
        """BEGIN IMMEDIATE ... COMMIT, timed from the lock's taking. Yields [size]: the units to do,
        which the body replaces with the units it did; the next transaction of ``kind`` is sized
        from them to hold the lock about HOLD_TARGET_S (growing at most twofold)."""
        size = self.sizes.get(kind, first)
        units = [size]
        self.conn.execute("BEGIN IMMEDIATE")
        started = time.perf_counter()
        try:
            yield units
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.held(kind, size, units[0], time.perf_counter() - started, lowest, highest)

    def held(self, kind: str, size: int, units: int, seconds: float, lowest: int, highest: int) -> None:
        self.report.transactions += 1
        self.report.longest_hold = max(self.report.longest_hold, seconds)
        self.since_checkpoint += 1
        if self.since_checkpoint >= self.checkpoint_every:
            self.checkpoint()
        if units >= size // 2:  # a short last chunk says nothing about the rate
            wanted = int(units * HOLD_TARGET_S / max(seconds, 1e-6))
            self.sizes[kind] = max(lowest, min(highest, wanted, size * 2))

    def checkpoint(self) -> None:
        """A passive checkpoint between transactions, outside the lock (auto-checkpoint is off for
        the round: run by a COMMIT, its copying would count as holding the lock, which it does not)."""
        frames = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        per_transaction = max(1.0, frames / max(1, self.since_checkpoint))
        self.checkpoint_every = max(1, min(64, int(CHECKPOINT_FRAMES / per_transaction)))
        self.since_checkpoint = 0

    def tick(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)


def delete_chunk(conn: sqlite3.Connection, pace: Pace, table: str, key: str, low: int, stop: Optional[int],
                 where: Optional[Tuple[str, float]], most: Optional[int] = None) -> Tuple[int, Optional[int]]:
    """One transaction deleting the oldest rows of ``table`` from ``low`` (by ``key``), below ``stop``.

    Returns (rows deleted, the key the next chunk starts at); None for the key when there was nothing left.
    """
    with pace.transaction(table, 1000, 100, 200_000) as units:
        first = conn.execute(f"SELECT min({key}) FROM [{table}] WHERE {key} >= ?", (low,)).fetchone()[0]
        if first is None:
            units[0] = 0
            return 0, None
        end = first + min(units[0], most or units[0])
        end = end if stop is None else min(end, stop)
        condition, params = f"{key} >= ? AND {key} < ?", [first, end]
        if where is not None:
            condition += f" AND {where[0]}"
            params.append(where[1])
        deleted = conn.execute(f"DELETE FROM [{table}] WHERE {condition}", params).rowcount
        _add_meta(conn, META_PRUNED, deleted)
        units[0] = end - first
    pace.report.rows += deleted
    if table == LEGACY:
        pace.report.legacy_rows += deleted
    return deleted, end


# The rollup tables in the order the size budget deletes them once no raw row is left, by level:
# the hourly detail, the daily detail, the daily sums per route, then the whole site's hourly
# and daily totals, each level's oldest rows first by their primary key.
_ROLLUPS_OLDEST_FIRST = (
    (("rollup_visitors_hourly", "hour, is_bot, visitor"),
     ("rollup_hourly", "hour, route_id, path_id, method_id, status_class, is_bot, bucket"))
    + tuple((f"rollup_{name}_hourly", f"hour, {column}") for name, column, _, _ in toplists.LISTS),
    (("rollup_visitors_daily", "day, is_bot, visitor"),
     ("rollup_daily", "day, route_id, path_id, method_id, status_class, is_bot, bucket"))
    + tuple((f"rollup_{name}_daily", f"day, {column}") for name, column, _, _ in toplists.LISTS),
    tuple((table, ", ".join((unit,) + summary.key)) for summary in route_summaries.SUMMARIES
          for table, unit in summary.tables()),
    (("rollup_traffic_hourly", "hour, status_class, is_bot, bucket"),),
    (("rollup_traffic_daily", "day, status_class, is_bot, bucket"),),
)


def delete_oldest_rollups(conn: sqlite3.Connection, pace: Pace) -> int:
    """One transaction deleting the oldest rollup rows of the first level that has any (see
    _ROLLUPS_OLDEST_FIRST). Returns how many went; 0 when no rollup row is left.

    Only the size budget calls this, with every raw row but the newest gone: a budget that the
    rollups alone fill would otherwise stop the log taking new rows.
    """
    with pace.transaction("rollups", 1000, 100, 200_000) as units:
        deleted = 0
        for level in _ROLLUPS_OLDEST_FIRST:
            # Of a level's tables, the one whose oldest hour (day) is older goes first.
            oldest = sorted((found, table, key) for table, key in level if has_table(conn, table)
                            for (found,) in conn.execute(f"SELECT min({key.split(',')[0]}) FROM [{table}]")
                            if found is not None)
            if oldest:
                _, table, key = oldest[0]
                deleted = conn.execute(f"DELETE FROM [{table}] WHERE ({key}) IN (SELECT {key} FROM [{table}] "
                                       f"ORDER BY {key} LIMIT ?)", (units[0],)).rowcount
                break
        units[0] = max(deleted, 1)
    pace.report.rollup_rows += deleted
    return deleted


def delete_orphans(conn: sqlite3.Connection, pace: Pace, table: str) -> int:
    """Delete the values of one lookup table that no row and no rollup references; returns how many.

    Found in one read (no write lock), then deleted in short transactions that check again only
    the rows committed since, which are those with an id above the read's newest. Rollup rows are
    written in the transactions that write the rows they count, so a value referenced again
    after the read has a newer row that says so.
    """
    columns = dict(lookup_references(conn))[table]
    conn.execute("BEGIN")  # one snapshot for the newest id and the values nothing references
    try:
        newest = conn.execute("SELECT coalesce(max(id), 0) FROM request_log").fetchone()[0]
        unused = " ".join(f"EXCEPT SELECT [{column}] FROM [{source}]" for source, column in columns)
        # Held in Python, not in a temp table: a temp table on the writer's connection makes SQLite
        # prepare the writer's INSERTs again at every later transaction.
        orphans = [row[0] for row in conn.execute(f"SELECT id FROM [{table}] {unused} ORDER BY 1")]
    finally:
        conn.execute("COMMIT")
    total = len(orphans)
    fresh = [column for source, column in columns if source == "request_log"]
    recheck = "".join(f" AND id NOT IN (SELECT [{column}] FROM request_log WHERE id > ? AND [{column}] IS NOT NULL)"
                      for column in fresh)
    done = deleted = 0
    while done < total:
        with pace.transaction("lookups:" + table, 1000, 100, 100_000) as units:
            chunk = orphans[done:done + units[0]]
            gone = conn.execute(f"DELETE FROM [{table}] WHERE id IN (SELECT value FROM json_each(?)){recheck}",
                                [json.dumps(chunk)] + [newest] * len(fresh)).rowcount
            if gone:
                _add_meta(conn, META_GENERATION, 1)  # writers drop their cached ids (Retention.ids_current)
        deleted += gone
        done += len(chunk)
        pace.tick("lookups:" + table, done, total)
    return deleted


def vacuum(conn: sqlite3.Connection, pace: Pace) -> bool:
    """Give free pages back to the file system in steps; True when none is left (or none can go)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        pace.report.incremental = False  # freed pages stay in the file for reuse (see the vacuum command)
        return True
    total = page_counts(conn)[1]
    while True:
        free = page_counts(conn)[1]
        if free == 0:
            return True
        if pace.out_of_time():
            return False
        step = min(free, pace.sizes.get("vacuum", 256))
        began: List[float] = []
        # Python's sqlite3 steps a statement without result columns once, and the pragma frees one
        # page per step: executescript steps it to the end. The trace marks the pragma's start,
        # when BEGIN IMMEDIATE has the lock.
        conn.set_trace_callback(lambda sql: began.append(time.perf_counter()) if "incremental_vacuum" in sql else None)
        try:
            conn.executescript(f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({step}); COMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.set_trace_callback(None)
        ended = time.perf_counter()
        pace.held("vacuum", step, step, ended - (began[0] if began else ended), 16, 50_000)
        pace.report.pages_vacuumed += step
        pace.tick("vacuum", pace.report.pages_vacuumed, total)


def vacuum_free_pages(conn: sqlite3.Connection, progress: Optional[Progress] = None) -> Report:
    """Give every free page of an auto_vacuum=INCREMENTAL file back to the disk, in short transactions."""
    report = Report(bytes_before=file_bytes(conn))
    started = time.monotonic()
    with round_settings(conn):
        pace = Pace(conn, report, {}, progress=progress)
        vacuum(conn, pace)
        pace.checkpoint()
    report.bytes_after, report.seconds = file_bytes(conn), time.monotonic() - started
    return report


def convert_to_incremental(conn: sqlite3.Connection, progress: Optional[Callable[[float], None]] = None) -> Report:
    """Switch a file made with auto_vacuum=NONE to INCREMENTAL: one VACUUM, which rewrites the file
    under the write lock (writers wait, and hold their batches once past their busy_timeout).

    ``progress(share)`` is told roughly how far the rewrite is (0 to 1) while it goes.
    """
    report = Report(bytes_before=file_bytes(conn))
    pages = max(1, conn.execute("PRAGMA page_count").fetchone()[0])
    steps = [0]

    def step() -> int:
        steps[0] += 1
        if progress is not None:
            # About 375 VDBE instructions per page for this schema (measured): a rough share.
            progress(min(1.0, steps[0] * 10_000 / (pages * 375)))
        return 0

    started = time.monotonic()
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.set_progress_handler(step, 10_000)
    try:
        conn.execute("VACUUM")
    finally:
        conn.set_progress_handler(None, 0)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    report.transactions, report.longest_hold = 1, time.monotonic() - started
    report.bytes_after, report.seconds = file_bytes(conn), report.longest_hold
    report.incremental = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    return report


# ---- small helpers ----------------------------------------------------------------------------
@contextlib.contextmanager
def round_settings(conn: sqlite3.Connection) -> Iterator[None]:
    """The connection's settings for a round, put back after it.

    No auto-checkpoint (Pace checkpoints between transactions), and synchronous=NORMAL as the
    writer has it: in WAL mode a COMMIT then waits for no fsync, and a deletion lost to a power
    cut leaves rows that the next round deletes again. The writer's max_page_count gets 1% more
    room: a deletion that rebalances an index can need a page, and a full budget must not stop
    the pruning that empties it.
    """
    automatic = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    limit = conn.execute("PRAGMA journal_size_limit").fetchone()[0]
    pages = conn.execute("PRAGMA max_page_count").fetchone()[0]
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA synchronous = NORMAL")
    if limit < 0:
        conn.execute(f"PRAGMA journal_size_limit = {4 * 2**20}")  # the -wal shrinks back after the round, as the writer's does
    conn.execute(f"PRAGMA max_page_count = {min(2**31 - 2, pages + max(16, pages // 100))}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(automatic)}")
        conn.execute(f"PRAGMA synchronous = {int(synchronous)}")
        conn.execute(f"PRAGMA journal_size_limit = {int(limit)}")
        conn.execute(f"PRAGMA max_page_count = {int(pages)}").fetchall()


def page_size(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA page_size").fetchone()[0]


def page_counts(conn: sqlite3.Connection) -> Tuple[int, int]:
    """(pages in use, free pages): the size budget counts the pages in use."""
    count = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return count - free, free


def file_bytes(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA page_count").fetchone()[0] * page_size(conn)


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def lookup_references(conn: sqlite3.Connection) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """Each lookup table with the (table, column) pairs that reference it: the foreign keys of
    request_log and requests_0_1 as the file declares them, rollups.REFERENCES and toplists.REFERENCES."""
    found: Dict[str, List[Tuple[str, str]]] = {}
    for source in ("request_log", LEGACY):
        if has_table(conn, source):
            for row in conn.execute(f"PRAGMA foreign_key_list([{source}])"):
                found.setdefault(row[2], []).append((source, row[3]))
    for table, pairs in [*rollups.REFERENCES.items(), *toplists.REFERENCES.items()]:
        found.setdefault(table, [])
        found[table] += [(source, column) for source, column in pairs if has_table(conn, source)]
    return sorted((table, pairs) for table, pairs in found.items() if has_table(conn, table))


def _add_meta(conn: sqlite3.Connection, key: str, amount: int) -> None:
    """Add to a counter kept in log_meta, inside the open transaction (files before schema 2 have none)."""
    if amount and has_table(conn, "log_meta"):
        conn.execute("INSERT INTO log_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                     "SET value = CAST(value AS INTEGER) + excluded.value", (key, amount))


def store_summary(conn: sqlite3.Connection, report: Report) -> None:
    """Keep what the round did in log_meta, for anyone who reads the file later."""
    if has_table(conn, "log_meta"):
        summary = {"at_ms": int(time.time() * 1000), "rows": report.rows, "rollup_rows": report.rollup_rows,
                   "lookups": sum(report.lookups.values()),
                   "pages_vacuumed": report.pages_vacuumed, "transactions": report.transactions,
                   "longest_hold_ms": round(report.longest_hold * 1000, 3), "seconds": round(report.seconds, 3)}
        conn.execute("INSERT INTO log_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     (META_LAST, json.dumps(summary)))


def pruned_rows(conn: sqlite3.Connection) -> int:
    """Rows retention has deleted from this file so far, by every process (log_meta)."""
    if not has_table(conn, "log_meta"):
        return 0
    row = conn.execute("SELECT value FROM log_meta WHERE key = ?", (META_PRUNED,)).fetchone()
    return int(row[0]) if row else 0


def lookup_generation(conn: sqlite3.Connection) -> object:
    """The count log_meta bumps whenever lookup rows are deleted (0 before any): writers compare it with their cache's."""
    row = conn.execute("SELECT value FROM log_meta WHERE key = ?", (META_GENERATION,)).fetchone()
    return row[0] if row else 0
