"""Retention's policy: keep a log within an age, a row count and a size, oldest rows first.

The Retention class holds the options, checks them, chooses the defaults (the size budget) and
decides what goes and when; pruning.py does the deleting, in short transactions.

The writer calls ``run`` on its own thread between batches. One call works for at most SLICE_S,
so the queue keeps draining while a large prune goes on, and ``due`` says when to call again. The
``prune`` command calls ``prune``, which goes to the end.

A round has three phases: rows (the 0.1.1 table requests_0_1 first, its rows being the oldest),
then lookup values that nothing references any more, then ``PRAGMA incremental_vacuum`` to give
the freed pages back to the disk.

Ids only grow: the newest row of request_log is never deleted. That is what lets pruners and
writers in several processes share a file without talking to each other: a row committed after
a moment has a larger id than every row there was at that moment.
"""
from __future__ import annotations

import math
import os
import sqlite3
import sys
import time
from typing import Dict, List, Optional, Tuple

from . import pruning, rollups, toplists
from .failures import classify, is_locked
from .pruning import LEGACY, Progress, Report
# Re-exported: cli/maintenance.py, cli/reading/check.py and benchmarks/prune.py know these names from here.
from .pruning import META_LAST, convert_to_incremental, pruned_rows, vacuum_free_pages  # noqa: F401

# The size budget when max_size_mb is not given: journald's SystemMaxUse rule (10% of the file
# system, at most 4 GB), with a floor so that a tiny file system meets a full disk, not a budget.
DEFAULT_SHARE = 0.10
DEFAULT_CAP_MB = 4096
DEFAULT_FLOOR_MB = 64
# The summaries that count rows up to a watermark: pruning deletes only rows that all of them count.
SUMMARIES = (toplists.WATERMARK, rollups.WATERMARK)
# The cap on each lookup table's values that middleware.py applies by default: a scanner's flood
# of unique paths or agents then costs at most ~15 MB per table (see docs/retention.md).
DEFAULT_MAX_DISTINCT_VALUES = 100_000
# Pruning for size starts when the pages in use pass PRUNE_AT of the budget and goes down to
# PRUNE_TO, so that the hard cap (max_page_count, met as SQLITE_FULL) is rarely reached.
PRUNE_AT = 0.90
PRUNE_TO = 0.80
SLICE_S = 0.2            # the most one run() call works before the writer takes its queue again
CHECK_EVERY_S = 1.0      # how often the writer looks when nothing is under way
ORPHANS_EVERY_S = 60.0   # how often at most the writer looks for unused lookup values
KEEP_ROWS_SLACK = 0.01   # the writer prunes by count once this share over keep_rows (the CLI at once)
_DAY_MS = 86_400_000
# Two subqueries: SQLite answers a lone min() or max() from the index, but both in one SELECT by a scan.
_BOUNDS = "SELECT (SELECT min(id) FROM request_log), (SELECT max(id) FROM request_log)"


def default_budget_mb(path: str) -> float:
    """The size budget of a log at ``path`` with no max_size_mb: 10% of its file system, 64 MB to 4 GB."""
    directory = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)  # a dated pattern's directories may not exist yet
    stat = os.statvfs(directory)
    share = stat.f_blocks * stat.f_frsize * DEFAULT_SHARE / 2**20
    return float(min(DEFAULT_CAP_MB, max(DEFAULT_FLOOR_MB, share)))


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
        self._toplists = toplists.CatchUp()
        self._rollups = rollups.StuckCatchUp()
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
        return max(1, self.budget_bytes // pruning.page_size(conn))

    def due(self, now: float) -> bool:
        """Whether run() has work to look at, ``now`` being time.monotonic(): cheap, called often."""
        return now >= self._next

    def ids_current(self, conn: sqlite3.Connection) -> bool:
        """False when lookup rows were deleted (by any process) since the last call: cached ids must go.

        For the writer, inside each batch's transaction before it resolves ids: a deleted value's
        id may be given to another value, so an id cached before the deletion could name it.
        """
        generation = pruning.lookup_generation(conn)
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
            # The top lists first: pruning may delete only rows they count already.
            try:
                caught_up = (self._toplists.run(conn, self._started + SLICE_S)
                             and self._rollups.run(conn, self._started + SLICE_S))
            except sqlite3.OperationalError as error:
                if classify(error) != "disk_full":
                    raise
                caught_up = False  # the budget is full: the pruning below makes room for them first
            finished = self._advance(conn, pruning.Pace(conn, report, self._sizes, self._started + SLICE_S),
                                     full=full, strict=False)
        except sqlite3.OperationalError as error:
            if not is_locked(error):
                raise
            finished = caught_up = True  # another connection held the lock past busy_timeout: look again later
        finally:
            if self._round is report:  # a round still under way: this slice's time is part of it
                report.seconds += time.monotonic() - self._started
        self._next = time.monotonic() + CHECK_EVERY_S if finished and caught_up else 0.0

    def prune(self, conn: sqlite3.Connection, progress: Optional[Progress] = None) -> Report:
        """Prune ``conn`` to the end (the CLI): every limit met exactly, unused values removed, space returned.

        ``progress(phase, done, total)`` is called after each transaction; phase is "rows",
        "lookups:<table>" or "vacuum".
        """
        self._reset(_main_file(conn))
        catch_up(conn)
        self._advance(conn, pruning.Pace(conn, self._round, self._sizes, progress=progress), full=False, strict=True)
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

    def _advance(self, conn: sqlite3.Connection, pace: pruning.Pace, *, full: bool, strict: bool) -> bool:
        """Go on with the round from its phase; True when it is over (or had nothing to do)."""
        with pruning.round_settings(conn):
            return self._phases(conn, pace, full=full, strict=strict)

    def _phases(self, conn: sqlite3.Connection, pace: pruning.Pace, *, full: bool, strict: bool) -> bool:
        report = self._round
        if not report.transactions:
            report.bytes_before = pruning.file_bytes(conn)
        if self._phase == "rows":
            if not self._delete_rows(conn, pace, strict=strict):
                return False
            now = time.monotonic()
            self._orphans_owed = self._orphans_owed or report.rows > 0 or report.rollup_rows > 0
            # A look reads every row once per lookup table: the writer looks at most once a
            # minute, or at once when the size budget was hit.
            if strict or (self._orphans_owed and (full or now - self._orphans_at >= ORPHANS_EVERY_S)):
                self._orphan_tables = [table for table, _ in pruning.lookup_references(conn)]
                self._orphans_at, self._orphans_owed = now, False
            self._phase = "lookups"
        while self._orphan_tables:
            if pace.out_of_time():
                return False
            report.lookups[self._orphan_tables[0]] = report.lookups.get(self._orphan_tables[0], 0) + \
                pruning.delete_orphans(conn, pace, self._orphan_tables[0])
            self._orphan_tables.pop(0)
        self._phase = "vacuum"
        if not pruning.vacuum(conn, pace):
            return False
        if report.transactions:
            pace.checkpoint()  # the file shrinks at a checkpoint
        report.bytes_after = pruning.file_bytes(conn)
        now = time.monotonic()
        report.seconds += now - self._started
        self._started = now
        if report.did_something():
            pruning.store_summary(conn, report)
        self._last, self._round, self._phase = report, Report(), "rows"
        return True

    def _delete_rows(self, conn: sqlite3.Connection, pace: pruning.Pace, *, strict: bool) -> bool:
        """Delete the oldest rows until every limit is met; True when done, False when out of time."""
        page_size = pruning.page_size(conn)
        legacy = pruning.has_table(conn, LEGACY)
        budget = None if self.budget_bytes is None else self.budget_bytes // page_size
        used = pruning.page_counts(conn)[0]
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
            # Rows the summaries do not count yet stay until they are summed: below ``ceiling`` only.
            ceiling = counted_below(conn, high)
            if sizing:
                sizing = pruning.page_counts(conn)[0] > PRUNE_TO * budget
            before = report.rows
            if legacy and (sizing or legacy_over > 0):
                deleted, _ = pruning.delete_chunk(conn, pace, LEGACY, "rowid", 0, None, None, legacy_over or None)
                legacy_over -= deleted
                legacy = deleted > 0  # none deleted: the table is empty
            elif legacy and cutoff_ms is not None and _older(conn, LEGACY, "rowid", "start * 1000", legacy_from, cutoff_ms):
                _, legacy_from = pruning.delete_chunk(conn, pace, LEGACY, "rowid", legacy_from, None, ("start < ?", cutoff_ms / 1000))
                legacy = legacy_from is not None
                legacy_from = legacy_from or 0
            elif low is None or low >= high:
                # At most the newest row is left, and it stays. Past the budget still, the oldest
                # rollups go: a budget they alone fill would stop the log taking new rows.
                if not (sizing and pruning.delete_oldest_rollups(conn, pace)):
                    return True
            elif low >= ceiling and (sizing or low < count_below or cutoff_ms is not None):
                try:
                    if not catch_up(conn, pace.deadline):
                        return False
                except sqlite3.OperationalError as error:
                    # No room to sum them, and every raw row is still to be summed: the oldest rollups go first.
                    if classify(error) != "disk_full" or not (sizing and pruning.delete_oldest_rollups(conn, pace)):
                        raise
                    continue
                if counted_below(conn, high) <= low:
                    return True  # nothing above the watermark after all (rows deleted meanwhile)
            elif sizing or low < count_below:
                pruning.delete_chunk(conn, pace, "request_log", "id", low, ceiling if sizing else min(count_below, ceiling), None)
            elif cutoff_ms is not None and _older(conn, "request_log", "id", "start_ms", max(low, age_from), cutoff_ms, ceiling):
                _, age_from = pruning.delete_chunk(conn, pace, "request_log", "id", max(low, age_from), ceiling, ("start_ms < ?", cutoff_ms))
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


def _main_file(conn: sqlite3.Connection) -> str:
    return next(row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main")


def _older(conn: sqlite3.Connection, table: str, key: str, start_ms: str, low: int, cutoff_ms: int,
           below: Optional[int] = None) -> bool:
    """Whether the first row of ``table`` from ``low`` (and below ``below``) started before ``cutoff_ms``."""
    row = conn.execute(f"SELECT {key}, {start_ms} FROM [{table}] WHERE {key} >= ? ORDER BY {key} LIMIT 1", (low,)).fetchone()
    return row is not None and row[1] is not None and row[1] < cutoff_ms and (below is None or row[0] < below)


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


def counted_below(conn: sqlite3.Connection, high: Optional[int]) -> Optional[int]:
    """``high`` (request_log's newest id), or less: the id above the last row every summary counts."""
    for mark in SUMMARIES:
        if high is not None and mark.has_tables(conn):
            high = min(high, mark.marked(conn) + 1)
    return high


def catch_up(conn: sqlite3.Connection, deadline: Optional[float] = None) -> bool:
    """Every summary's mark moved to the newest row (watermarks.Watermark.catch_up); True when done."""
    return all([mark.catch_up(conn, deadline) for mark in SUMMARIES])
