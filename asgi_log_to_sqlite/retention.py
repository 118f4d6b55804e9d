"""Retention: keep a log within an age, a row count and a size, oldest rows first, in short transactions.

The writer calls ``run`` on its own thread between batches. One call works for at most SLICE_S,
so the queue keeps draining while a large prune goes on, and ``due`` says when to call again. The
``prune`` command calls ``prune``, which goes to the end. Every change is one ``BEGIN IMMEDIATE`` ...
``COMMIT`` of a bounded id range, sized from the previous one to hold the write lock for about
HOLD_TARGET_S. A writer in another process waits that long at most, and holds its batch for a
retry if it ever waits longer, so pruning costs no rows.

A round has three phases: rows (the 0.1.1 table requests_0_1 first, its rows being the oldest),
then lookup values that nothing references any more, then ``PRAGMA incremental_vacuum`` to give
the freed pages back to the disk.

Ids only grow: the newest row of request_log is never deleted. That is what lets pruners and
writers in several processes share a file without talking to each other: a row committed after
a moment has a larger id than every row there was at that moment.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from . import rollups

# The size budget when max_size_mb is not given: journald's SystemMaxUse rule (10% of the file
# system, at most 4 GB), with a floor so that a tiny file system meets a full disk, not a budget.
DEFAULT_SHARE = 0.10
DEFAULT_CAP_MB = 4096
DEFAULT_FLOOR_MB = 64
# The cap on each lookup table's values that middleware.py applies by default: a scanner's flood
# of unique paths or agents then costs at most ~15 MB per table (see docs/retention.md).
DEFAULT_MAX_DISTINCT_VALUES = 100_000
# Pruning for size starts when the pages in use pass PRUNE_AT of the budget and goes down to
# PRUNE_TO, so that the hard cap (max_page_count, met as SQLITE_FULL) is rarely reached.
PRUNE_AT = 0.90
PRUNE_TO = 0.80
HOLD_TARGET_S = 0.005    # each write transaction aims at holding the lock this long
SLICE_S = 0.2            # the most one run() call works before the writer takes its queue again
CHECK_EVERY_S = 1.0      # how often the writer looks when nothing is under way
ORPHANS_EVERY_S = 60.0   # how often at most the writer looks for unused lookup values
CHECKPOINT_FRAMES = 1000  # pages in the -wal between checkpoints, as SQLite's auto-checkpoint has it
KEEP_ROWS_SLACK = 0.01   # the writer prunes by count once this share over keep_rows (the CLI at once)
LEGACY = "requests_0_1"
META_PRUNED = "retention.pruned_rows"            # log_meta: rows retention has deleted, ever
META_GENERATION = "retention.lookup_generation"  # log_meta: bumped whenever lookup rows are deleted
META_LAST = "retention.last_prune"               # log_meta: JSON summary of the last round that did anything
_DAY_MS = 86_400_000
# Two subqueries: SQLite answers a lone min() or max() from the index, but both in one SELECT by a scan.
_BOUNDS = "SELECT (SELECT min(id) FROM request_log), (SELECT max(id) FROM request_log)"
Progress = Callable[[str, int, int], None]       # (phase, done, total)


def default_budget_mb(path: str) -> float:
    """The size budget of a log at ``path`` with no max_size_mb: 10% of its file system, 64 MB to 4 GB."""
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)  # a dated pattern's directories may not exist yet
    stat = os.statvfs(directory)
    share = stat.f_blocks * stat.f_frsize * DEFAULT_SHARE / 2**20
    return float(min(DEFAULT_CAP_MB, max(DEFAULT_FLOOR_MB, share)))


@dataclass
class Report:
    """What one round of pruning did."""

    rows: int = 0                  # request rows deleted, request_log and requests_0_1
    legacy_rows: int = 0           # of those, rows of the 0.1.1 table requests_0_1
    lookups: Dict[str, int] = field(default_factory=dict)  # lookup table -> values deleted
    pages_vacuumed: int = 0        # pages given back to the file system
    bytes_before: int = 0          # page_count x page_size when the round began
    bytes_after: int = 0
    transactions: int = 0
    longest_hold: float = 0.0      # seconds, the longest BEGIN IMMEDIATE -> COMMIT of the round
    seconds: float = 0.0           # working time (the writer's slices added up)
    incremental: bool = True       # auto_vacuum=INCREMENTAL; without it freed pages stay in the file

    def did_something(self) -> bool:
        return bool(self.rows or sum(self.lookups.values()) or self.pages_vacuumed)


class _Pace:
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


class Retention:
    """The retention options of one log (a file, or the current file of a dated pattern)."""

    def __init__(self, path: str, *, keep_days: Optional[float] = None, keep_rows: Optional[int] = None,
                 max_size_mb: Optional[float] = None):
        self.validate(keep_days=keep_days, keep_rows=keep_rows, max_size_mb=max_size_mb)
        self.path = path
        self.keep_days = keep_days
        self.keep_rows = keep_rows
        self.max_size_mb = max_size_mb
        budget = default_budget_mb(path) if max_size_mb is None else max_size_mb
        # None: no size budget at all (max_size_mb=float("inf")).
        self.budget_bytes: Optional[int] = None if math.isinf(budget) else int(budget * 2**20)
        self._next = 0.0
        self._generation: object = None  # the lookup generation the writer's cached ids belong to
        self._warned = False
        self._reset(None)

    @staticmethod
    def validate(*, keep_days: Optional[float], keep_rows: Optional[int], max_size_mb: Optional[float]) -> None:
        """Raise ValueError naming the option and the expected form: called at construction."""
        def positive(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0

        if max_size_mb is not None and not positive(max_size_mb):
            raise ValueError(f"max_size_mb={max_size_mb!r}: expected a positive number of megabytes, for example 500 "
                             "(float('inf') for no size budget)")
        if keep_days is not None and not (positive(keep_days) and not math.isinf(keep_days)):
            raise ValueError(f"keep_days={keep_days!r}: expected a positive number of days, for example 30")
        if keep_rows is not None and (isinstance(keep_rows, bool) or not isinstance(keep_rows, int) or keep_rows < 1):
            raise ValueError(f"keep_rows={keep_rows!r}: expected a whole number of at least 1, for example 1000000")

    def page_limit(self, conn: sqlite3.Connection) -> Optional[int]:
        """The PRAGMA max_page_count that enforces the size budget on ``conn``, or None for none."""
        if self.budget_bytes is None:
            return None
        return max(1, self.budget_bytes // _page_size(conn))

    def due(self, now: float) -> bool:
        """Whether run() has work to look at, ``now`` being time.monotonic(): cheap, called often."""
        return now >= self._next

    def ids_current(self, conn: sqlite3.Connection) -> bool:
        """False when lookup rows were deleted (by any process) since the last call: cached ids must go.

        For the writer, inside each batch's transaction before it resolves ids: a deleted value's
        id may be given to another value, so an id cached before the deletion could name it.
        """
        row = conn.execute("SELECT value FROM log_meta WHERE key = ?", (META_GENERATION,)).fetchone()
        generation = row[0] if row else 0
        if generation == self._generation:
            return True
        self._generation = generation
        return False

    def run(self, conn: sqlite3.Connection, *, full: bool = False) -> None:
        """One slice of pruning on ``conn`` (autocommit, no transaction open), in small transactions.

        ``full``: the size budget was hit (SQLITE_FULL): unused lookup values are looked for at
        once. A full disk below the budget prunes nothing: the writer holds its batch until there is room.
        """
        self._started = time.monotonic()
        file = _main_file(conn)
        if file != self._file:
            self._reset(file)
        report = self._round
        try:
            finished = self._advance(conn, _Pace(conn, report, self._sizes, self._started + SLICE_S),
                                     full=full, strict=False)
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            finished = True  # another connection held the lock past busy_timeout: look again later
        finally:
            if self._round is report:  # a round still under way: this slice's time is part of it
                report.seconds += time.monotonic() - self._started
        self._next = time.monotonic() + CHECK_EVERY_S if finished else 0.0

    def prune(self, conn: sqlite3.Connection, progress: Optional[Progress] = None) -> Report:
        """Prune ``conn`` to the end (the CLI): every limit met exactly, unused values removed, space returned.

        ``progress(phase, done, total)`` is called after each transaction; phase is "rows",
        "lookups:<table>" or "vacuum".
        """
        self._reset(_main_file(conn))
        self._advance(conn, _Pace(conn, self._round, self._sizes, progress=progress), full=False, strict=True)
        return self._last or self._round

    # ---- a round: rows, then lookup values, then the free pages ------------------------------
    def _reset(self, file: Optional[str]) -> None:
        self._file = file
        self._round = Report()
        self._last: Optional[Report] = None
        self._phase = "rows"
        self._sizes: Dict[str, int] = {}
        self._orphan_tables: List[str] = []
        self._orphans_owed = False  # rows went since the last look for unused lookup values
        self._orphans_at = -math.inf
        self._started = time.monotonic()

    def _advance(self, conn: sqlite3.Connection, pace: _Pace, *, full: bool, strict: bool) -> bool:
        """Go on with the round from its phase; True when it is over (or had nothing to do)."""
        with _pruning(conn):
            return self._phases(conn, pace, full=full, strict=strict)

    def _phases(self, conn: sqlite3.Connection, pace: _Pace, *, full: bool, strict: bool) -> bool:
        report = self._round
        if not report.transactions:
            report.bytes_before = _file_bytes(conn)
        if self._phase == "rows":
            if not self._delete_rows(conn, pace, strict=strict):
                return False
            now = time.monotonic()
            self._orphans_owed = self._orphans_owed or report.rows > 0
            # A look reads every row once per lookup table: the writer looks at most once a
            # minute, or at once when the size budget was hit.
            if strict or (self._orphans_owed and (full or now - self._orphans_at >= ORPHANS_EVERY_S)):
                self._orphan_tables = [table for table, _ in _references(conn)]
                self._orphans_at, self._orphans_owed = now, False
            self._phase = "lookups"
        while self._orphan_tables:
            if pace.out_of_time():
                return False
            report.lookups[self._orphan_tables[0]] = report.lookups.get(self._orphan_tables[0], 0) + \
                _delete_orphans(conn, pace, self._orphan_tables[0])
            self._orphan_tables.pop(0)
        self._phase = "vacuum"
        if not _vacuum(conn, pace):
            return False
        if report.transactions:
            pace.checkpoint()  # the file shrinks at a checkpoint
        report.bytes_after = _file_bytes(conn)
        now = time.monotonic()
        report.seconds += now - self._started
        self._started = now
        if report.did_something():
            _store_summary(conn, report)
        self._last, self._round, self._phase = report, Report(), "rows"
        return True

    def _delete_rows(self, conn: sqlite3.Connection, pace: _Pace, *, strict: bool) -> bool:
        """Delete the oldest rows until every limit is met; True when done, False when out of time."""
        page_size = _page_size(conn)
        legacy = _has_table(conn, LEGACY)
        budget = None if self.budget_bytes is None else self.budget_bytes // page_size
        used = _pages(conn)[0]
        # A full disk below the budget is no reason to delete rows: the writer holds its batch.
        sizing = budget is not None and used > PRUNE_AT * budget
        if sizing and self.max_size_mb is None and not self._warned:
            self._warned = True
            print(f"asgi_log_to_sqlite: {self._file}: {used * page_size / 2**20:.0f} MB, past the default size budget "
                  f"of {self.budget_bytes / 2**20:.0f} MB (10% of the file system, {DEFAULT_FLOOR_MB} MB to "
                  f"{DEFAULT_CAP_MB} MB); the oldest rows go first. Set max_size_mb to choose another budget",
                  file=sys.stderr, flush=True)
        count_below, legacy_over = self._count_limit(conn, legacy, strict)
        cutoff_ms = None if self.keep_days is None else int(time.time() * 1000 - self.keep_days * _DAY_MS)
        total = _estimate(conn, count_below, legacy_over, cutoff_ms, used, budget) if pace.progress else 0
        report = self._round
        age_from = legacy_from = 0  # where the age limit looks next: rows it kept are not looked at again
        while not pace.out_of_time():
            low, high = conn.execute(_BOUNDS).fetchone()
            if sizing:
                sizing = _pages(conn)[0] > PRUNE_TO * budget
            before = report.rows
            if legacy and (sizing or legacy_over > 0):
                deleted, _ = self._chunk(conn, pace, LEGACY, "rowid", 0, None, None, legacy_over or None)
                legacy_over -= deleted
                legacy = deleted > 0  # none deleted: the table is empty
            elif legacy and cutoff_ms is not None and _older(conn, LEGACY, "rowid", "start * 1000", legacy_from, cutoff_ms):
                _, legacy_from = self._chunk(conn, pace, LEGACY, "rowid", legacy_from, None, ("start < ?", cutoff_ms / 1000))
                legacy = legacy_from is not None
                legacy_from = legacy_from or 0
            elif low is None or low >= high:
                return True  # at most the newest row is left, and it stays
            elif sizing or low < count_below:
                self._chunk(conn, pace, "request_log", "id", low, high if sizing else count_below, None)
            elif cutoff_ms is not None and _older(conn, "request_log", "id", "start_ms", max(low, age_from), cutoff_ms, high):
                _, age_from = self._chunk(conn, pace, "request_log", "id", max(low, age_from), high, ("start_ms < ?", cutoff_ms))
            else:
                return True
            if report.rows > before:
                pace.tick("rows", report.rows, total)
        return False

    def _count_limit(self, conn: sqlite3.Connection, legacy: bool, strict: bool) -> Tuple[int, int]:
        """keep_rows as (the request_log id below which rows go, how many legacy rows go)."""
        if self.keep_rows is None:
            return 0, 0
        low, high = conn.execute(_BOUNDS).fetchone()
        legacy_rows = conn.execute(f"SELECT count(*) FROM [{LEGACY}]").fetchone()[0] if legacy else 0
        estimate = (high - low + 1 if high is not None else 0) + legacy_rows  # ids are nearly gapless
        if estimate <= self.keep_rows + (0 if strict else int(self.keep_rows * KEEP_ROWS_SLACK)):
            return 0, 0
        # The keep_rows-th newest row: every row below it goes, and every legacy row with them.
        row = conn.execute("SELECT id FROM request_log ORDER BY id DESC LIMIT 1 OFFSET ?", (self.keep_rows - 1,)).fetchone()
        if row is not None:
            return row[0], legacy_rows
        kept = conn.execute("SELECT count(*) FROM request_log").fetchone()[0]
        return 0, max(0, legacy_rows + kept - self.keep_rows)

    def _chunk(self, conn: sqlite3.Connection, pace: _Pace, table: str, key: str, low: int, stop: Optional[int],
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
        self._round.rows += deleted
        if table == LEGACY:
            self._round.legacy_rows += deleted
        return deleted, end


def _delete_orphans(conn: sqlite3.Connection, pace: _Pace, table: str) -> int:
    """Delete the values of one lookup table that no row and no rollup references; returns how many.

    Found in one read (no write lock), then deleted in short transactions that check again only
    the rows committed since, which are those with an id above the read's newest. Rollup rows are
    written in the transactions that write the rows they count, so a value referenced again
    after the read has a newer row that says so.
    """
    columns = dict(_references(conn))[table]
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS retention_orphans (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.retention_orphans")
    conn.execute("BEGIN")  # one snapshot for the newest id and the values nothing references
    try:
        newest = conn.execute("SELECT coalesce(max(id), 0) FROM request_log").fetchone()[0]
        unused = " ".join(f"EXCEPT SELECT [{column}] FROM [{source}]" for source, column in columns)
        conn.execute(f"INSERT INTO temp.retention_orphans SELECT id FROM [{table}] {unused}")
    finally:
        conn.execute("COMMIT")
    total = conn.execute("SELECT count(*) FROM temp.retention_orphans").fetchone()[0]
    fresh = [column for source, column in columns if source == "request_log"]
    recheck = "".join(f" AND id NOT IN (SELECT [{column}] FROM request_log WHERE id > ? AND [{column}] IS NOT NULL)"
                      for column in fresh)
    after = done = deleted = 0
    while done < total:
        with pace.transaction("lookups:" + table, 1000, 100, 100_000) as units:
            last, count = conn.execute("SELECT max(id), count(*) FROM (SELECT id FROM temp.retention_orphans WHERE id > ? "
                                       "ORDER BY id LIMIT ?)", (after, units[0])).fetchone()
            gone = conn.execute(f"DELETE FROM [{table}] WHERE id IN (SELECT id FROM temp.retention_orphans "
                                f"WHERE id > ? AND id <= ?){recheck}", [after, last] + [newest] * len(fresh)).rowcount
            if gone:
                _add_meta(conn, META_GENERATION, 1)  # writers drop their cached ids (Retention.ids_current)
        deleted += gone
        done += count
        after = last
        pace.tick("lookups:" + table, done, total)
    conn.execute("DELETE FROM temp.retention_orphans")
    return deleted


def _vacuum(conn: sqlite3.Connection, pace: _Pace) -> bool:
    """Give free pages back to the file system in steps; True when none is left (or none can go)."""
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        pace.report.incremental = False  # freed pages stay in the file for reuse (see the vacuum command)
        return True
    total = _pages(conn)[1]
    while True:
        free = _pages(conn)[1]
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
    report = Report(bytes_before=_file_bytes(conn))
    started = time.monotonic()
    with _pruning(conn):
        pace = _Pace(conn, report, {}, progress=progress)
        _vacuum(conn, pace)
        pace.checkpoint()
    report.bytes_after, report.seconds = _file_bytes(conn), time.monotonic() - started
    return report


def convert_to_incremental(conn: sqlite3.Connection, progress: Optional[Callable[[float], None]] = None) -> Report:
    """Switch a file made with auto_vacuum=NONE to INCREMENTAL: one VACUUM, which rewrites the file
    under the write lock (writers wait, and hold their batches once past their busy_timeout).

    ``progress(share)`` is told roughly how far the rewrite is (0 to 1) while it goes.
    """
    report = Report(bytes_before=_file_bytes(conn))
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
    report.bytes_after, report.seconds = _file_bytes(conn), report.longest_hold
    report.incremental = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    return report


# ---- small helpers ----------------------------------------------------------------------------
@contextlib.contextmanager
def _pruning(conn: sqlite3.Connection) -> Iterator[None]:
    """The connection's settings for a round, put back after it.

    No auto-checkpoint (_Pace checkpoints between transactions), and synchronous=NORMAL as the
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


def _main_file(conn: sqlite3.Connection) -> str:
    return next(row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main")


def _page_size(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA page_size").fetchone()[0]


def _pages(conn: sqlite3.Connection) -> Tuple[int, int]:
    """(pages in use, free pages): the size budget counts the pages in use."""
    count = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return count - free, free


def _file_bytes(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA page_count").fetchone()[0] * _page_size(conn)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _older(conn: sqlite3.Connection, table: str, key: str, start_ms: str, low: int, cutoff_ms: int,
           below: Optional[int] = None) -> bool:
    """Whether the first row of ``table`` from ``low`` (and below ``below``) started before ``cutoff_ms``."""
    row = conn.execute(f"SELECT {key}, {start_ms} FROM [{table}] WHERE {key} >= ? ORDER BY {key} LIMIT 1", (low,)).fetchone()
    return row is not None and row[1] is not None and row[1] < cutoff_ms and (below is None or row[0] < below)


def _references(conn: sqlite3.Connection) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """Each lookup table with the (table, column) pairs that reference it: the foreign keys of
    request_log and requests_0_1 as the file declares them, and rollups.REFERENCES."""
    found: Dict[str, List[Tuple[str, str]]] = {}
    for source in ("request_log", LEGACY):
        if _has_table(conn, source):
            for row in conn.execute(f"PRAGMA foreign_key_list([{source}])"):
                found.setdefault(row[2], []).append((source, row[3]))
    for table, pairs in getattr(rollups, "REFERENCES", {}).items():
        found.setdefault(table, [])
        found[table] += [(source, column) for source, column in pairs if _has_table(conn, source)]
    return sorted((table, pairs) for table, pairs in found.items() if _has_table(conn, table))


def _add_meta(conn: sqlite3.Connection, key: str, amount: int) -> None:
    """Add to a counter kept in log_meta, inside the open transaction (files before schema 2 have none)."""
    if amount and _has_table(conn, "log_meta"):
        conn.execute("INSERT INTO log_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                     "SET value = CAST(value AS INTEGER) + excluded.value", (key, amount))


def _store_summary(conn: sqlite3.Connection, report: Report) -> None:
    """Keep what the round did in log_meta, for anyone who reads the file later."""
    if _has_table(conn, "log_meta"):
        summary = {"at_ms": int(time.time() * 1000), "rows": report.rows, "lookups": sum(report.lookups.values()),
                   "pages_vacuumed": report.pages_vacuumed, "transactions": report.transactions,
                   "longest_hold_ms": round(report.longest_hold * 1000, 3), "seconds": round(report.seconds, 3)}
        conn.execute("INSERT INTO log_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     (META_LAST, json.dumps(summary)))


def _estimate(conn, count_below: int, legacy_over: int, cutoff_ms: Optional[int], used: int,
              budget: Optional[int]) -> int:
    """Roughly how many rows a round deletes, for a progress bar."""
    low, high = conn.execute(_BOUNDS).fetchone()
    if high is None:
        return legacy_over
    estimate = legacy_over + max(0, count_below - low)
    if budget is not None and used > PRUNE_AT * budget:
        estimate = max(estimate, int((high - low + 1) * (used - PRUNE_TO * budget) / used))
    if cutoff_ms is not None:
        first, last = low, high
        while first < last:  # bisection: ids follow start times closely
            middle = (first + last) // 2
            row = conn.execute("SELECT start_ms FROM request_log WHERE id >= ? ORDER BY id LIMIT 1", (middle,)).fetchone()
            first, last = (middle + 1, last) if row is not None and row[0] < cutoff_ms else (first, middle)
        estimate = max(estimate, first - low)
    return estimate


def pruned_rows(conn: sqlite3.Connection) -> int:
    """Rows retention has deleted from this file so far, by every process (log_meta)."""
    if not _has_table(conn, "log_meta"):
        return 0
    row = conn.execute("SELECT value FROM log_meta WHERE key = ?", (META_PRUNED,)).fetchone()
    return int(row[0]) if row else 0
