"""One writer thread per database file per process: queue -> batches -> one transaction each.

The event loop only calls ``submit`` (a size check and ``put_nowait``). The thread owns its own
connection (WAL, busy_timeout), resolves lookup ids from an in-memory cache, and writes each batch
with multi-row INSERTs inside ``BEGIN IMMEDIATE``. A batch that meets a lock, a full disk or an
I/O error is held and retried, in order, while the records waiting fit in ``queue_size``; whatever
cannot be written is counted per reason (counters.py) and stored with the next transaction that
commits.
"""
from __future__ import annotations

import atexit
import itertools
import operator
import os
import queue
import sqlite3
import sys
import threading
import time
import weakref
from typing import Any, Dict, List, Optional, Tuple

from . import schema
from .counters import Counters
from .failures import RETRIED, classify
from .files import check_writable, ensure_file, file_identity, open_writer_connection
from .inserts import ROWS_PER_STATEMENT, insert_sql, statement_sizes
from .lookups import BUCKET, LookupIds
from .record import FLAG_BUCKETED
from .retention import Retention
from .rollups import DAY_S, SALT_GRACE_S, Rollups, RollupTally
from .rotation import DatedPath, is_dated, split_by_file

_STOP = object()
# First pause before retrying a held batch; it doubles up to the writer's retry_delay.
_FIRST_RETRY_DELAY = 0.05
# The writer hands the GIL over once it has held it this long (issue 14: about 1 ms at most), and
# looks at the clock every SLICE records: a slice is well under 0.5 ms even when every record is a
# combination not seen before (docs/performance.md, "Writer cost").
HOLD_S = 0.0005
SLICE = 16
# Parameters gathered before the rows they hold are inserted, mid-batch: four statements' worth.
_FLUSH_COMMON = 4 * ROWS_PER_STATEMENT * len(schema.COMMON_COLUMNS)
_FLUSH_FULL = 4 * ROWS_PER_STATEMENT * len(schema.COLUMNS)


def hand_over() -> None:
    """Let a thread waiting for the GIL (the event loop) run now, not at the 5 ms switch interval.

    time.sleep(0) releases the GIL around a system call; a waiting thread takes it then.
    """
    time.sleep(0)


class _Flush:
    __slots__ = ("done",)

    def __init__(self):
        self.done = threading.Event()


class Writer:
    def __init__(self, path: str, *, queue_size: int = 10_000, batch_size: int = 1_000,
                 linger: float = 0.05, busy_timeout_ms: int = 5_000, retry_delay: float = 1.0,
                 stop_timeout_ms: int = 5_000, max_size_mb: Optional[float] = None,
                 max_distinct_values: Optional[int] = None, keep_days: Optional[float] = None,
                 keep_rows: Optional[int] = None, keep_files: Optional[int] = None):
        self.path = path  # a file, or a pattern naming one file per period (rotation.py)
        self.dated = DatedPath(path) if is_dated(path) else None
        self.keep_files = keep_files
        # The file the connection writes: the path itself, or the dated file now being written and
        # the [first, last) start times in milliseconds that belong to it.
        self.file: Optional[str] = None if self.dated else path
        self._period: Tuple[float, float] = (0.0, 0.0) if self.dated else (float("-inf"), float("inf"))
        self._newest_period = float("-inf")
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.linger = linger
        self.busy_timeout_ms = busy_timeout_ms
        self.retention = Retention(path, keep_days=keep_days, keep_rows=keep_rows, max_size_mb=max_size_mb)
        self.rollups = Rollups(hand_over=hand_over)
        self._salts_day = self._salt_day()  # the day whose end last made the idle writer delete salts
        self.retry_delay = retry_delay
        self.stop_timeout = stop_timeout_ms / 1000
        self.queue: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._put = self.queue.put_nowait
        self._qsize = self.queue.qsize
        self.counters = Counters(path, (
            f"a lookup table reached max_distinct_values={max_distinct_values}; new values are stored as "
            f"{BUCKET!r} on rows flagged {FLAG_BUCKETED}, and counted in its log_counters table"))
        # The event loop counts into this dict directly (see counters.LOOP_REASONS).
        self.loop_counts: Dict[str, int] = self.counters.loop
        self.rows_written = 0
        self.batches_written = 0
        # Records taken off the queue and not written yet (the batch in hand, or held for a
        # retry): submit counts them against queue_size, so memory stays bounded while held.
        self.held = 0
        self._markers = 0  # flush markers in the queue, left out of stats()["queued"]
        self._stop_deadline: Optional[float] = None  # set by close(): retrying ends then
        self._failing: Optional[str] = None
        self._conn: Optional[sqlite3.Connection] = None
        self.lookups = LookupIds(self.counters, max_distinct_values)
        self._inode: Optional[Tuple[int, int]] = None  # (device, inode) of the file the connection has open
        self._checked_at = 0.0
        self._shapers: "weakref.WeakSet[Any]" = weakref.WeakSet()  # every Shaper that cached ids of this file
        self._tally: Optional[RollupTally] = None  # committed rows' rollup sums, not in the tables yet
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self.started = False

    # ---- event-loop side -------------------------------------------------------------------
    def submit(self, record: tuple) -> None:
        """Queue one record (a tuple of Record's fields). Called on the event loop: never blocks."""
        if not self.started:
            self._start()
        if self._qsize() + self.held >= self.queue_size:
            self.loop_counts["queue_full"] += 1
            return
        self._put(record)

    # ---- any thread ------------------------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far; True when within ``timeout`` each record was written or
        counted (a record that cannot be written at all is counted, never waited for)."""
        marker = _Flush()
        # Under the lock the thread takes to decide it is done, so a marker is never left behind it.
        with self._start_lock:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return self.queue.qsize() == 0
            self._markers += 1
            self.queue.put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush, stop the thread and close the connection; True once the thread has ended.

        A held batch is retried for at most ``stop_timeout_ms`` more, then counted under its
        failure's reason. ``timeout`` defaults to what that can take: stop_timeout_ms plus one
        attempt's busy_timeout_ms, plus a second. Later submits start the thread again.
        """
        if timeout is None:
            timeout = self.stop_timeout + self.busy_timeout_ms / 1000 + 1.0
        thread = self._thread
        if thread is None:
            if self.queue.qsize() == 0:
                return True
            # Records queued after the thread ended (a submit racing its stop): write them now.
            self._start()
            thread = self._thread
            if thread is None:
                return False
        deadline = time.monotonic() + self.stop_timeout
        if self._stop_deadline is None or deadline < self._stop_deadline:
            self._stop_deadline = deadline
        self.queue.put(_STOP)
        thread.join(timeout)
        # A thread still running (a lock outlasting ``timeout``) stays the writer's only thread:
        # marking it stopped here would let the next submit start a second one on the same queue.
        return not thread.is_alive()

    def stats(self) -> Dict[str, Any]:
        return {"rows_written": self.rows_written, "batches": self.batches_written,
                "queued": max(0, self.queue.qsize() - self._markers), "held": self.held, "counted": self.counters.counted()}

    # ---- thread side -----------------------------------------------------------------------
    def _start(self) -> None:
        with self._start_lock:
            if self.started:
                return
            self._stop_deadline = None
            self._thread = threading.Thread(target=self._run, name=f"asgi-log-to-sqlite {self.path}", daemon=True)
            self._thread.start()
            self.started = True

    def _run(self) -> None:
        try:
            while True:
                self._loop()
                with self._start_lock:
                    # Records submitted behind the stop request (a close() that timed out while
                    # this thread wrote its last batch) are written before the thread ends.
                    if self.queue.qsize() == 0:
                        self._thread = None
                        self.started = False
                        return
                    self.queue.put(_STOP)
        finally:
            with self._start_lock:
                if self._thread is threading.current_thread():
                    self._thread = None
                    self.started = False

    def _loop(self) -> None:
        stop = False
        while not stop:
            try:
                item = self.queue.get(timeout=1.0)
            except queue.Empty:
                self._idle()
                continue
            if item is not _STOP and not isinstance(item, _Flush) and self._qsize() < self.batch_size:
                # Let a batch gather: fewer, larger transactions and fewer GIL hand-offs. Not
                # when a full batch is already waiting: that would cap throughput at
                # batch_size / linger rows per second.
                time.sleep(self.linger)
            batch: List[tuple] = []
            markers: List[_Flush] = []
            while True:
                if item is _STOP:
                    stop = True
                    # Drain whatever is still queued behind the stop request.
                    self._drain_into(batch, markers)
                    break
                if isinstance(item, _Flush):
                    markers.append(item)
                    # A stop request drained along with the rest still stops the thread.
                    stop = self._drain_into(batch, markers)
                    break
                batch.append(item)
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            self.held = len(batch)
            if markers:
                with self._start_lock:
                    self._markers -= len(markers)
            for start in range(0, len(batch), self.batch_size):
                self._write_batch(batch[start:start + self.batch_size])
                self.held = max(0, len(batch) - start - self.batch_size)
            self.held = 0
            if markers or stop:
                self._add_tally()  # flush() and close() leave the rollups current
            if not batch and not self._given_up():
                self._idle()
            elif self._failing is None and self.retention.due(time.monotonic()):
                self._maintain()
            for marker in markers:
                marker.done.set()
        if self._given_up():
            self.counters.report_unstored(self._failing)
        else:
            self._idle()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _drain_into(self, batch: List[tuple], markers: List[_Flush]) -> bool:
        """Move everything queued into batch and markers; True when a stop request was among it."""
        stop = False
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return stop
            if isinstance(item, _Flush):
                markers.append(item)
            elif item is _STOP:
                stop = True
            else:
                batch.append(item)
                self.held += 1  # still waiting, so still within queue_size for submit

    def _idle(self) -> None:
        """Persist counters that changed, try to reconnect after a failure, prune when due."""
        if self._tally is not None and self._tally.due():
            self._add_tally()
        if self._failing is None and self.retention.due(time.monotonic()):
            self._maintain()
        if self._salt_day() > self._salts_day and self._conn is not None:
            # A day is over: its visitor salt goes now, even if no request comes to write a batch.
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self.rollups.expire_salts(self._conn)
                self._conn.execute("COMMIT")
                self._salts_day = self._salt_day()
            except Exception as error:
                self._rollback()
                self._failed(error)
        if self.counters.changed():
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                stored = self.counters.persist(conn)
                conn.execute("COMMIT")
                self.counters.committed(stored)
                self._recovered()
            except Exception as error:
                self._rollback()
                self._failed(error)

    def _add_tally(self) -> bool:
        """Add the rollup sums held to the file's tables now, in a transaction of their own; True
        when they went in (rollups.Rollups.add_tally).

        When that fails the sums go: their rows stay above the rollups' mark, where the next writer
        or command sums them from the raw rows.
        """
        tally, self._tally = self._tally, None
        if tally is None or self._conn is None:
            return False
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            added = self.rollups.add_tally(conn, tally)
            conn.execute("COMMIT")
            return added
        except Exception as error:
            self._rollback()
            self._failed(error)
            return False

    @staticmethod
    def _salt_day() -> int:
        """Days since the epoch whose salts may be deleted by now (rollups.SALT_GRACE_S after midnight UTC)."""
        return int((time.time() - SALT_GRACE_S) // DAY_S)

    def _maintain(self, full: bool = False) -> None:
        """Retention between batches, on this thread, so it never competes with the writing."""
        if full:
            self._add_tally()  # pruning may have to sum every row first: these are summed already
        try:
            self.retention.run(self._connection(), full=full)
        except Exception as error:
            self._rollback()
            self._failed(error)

    def _given_up(self) -> bool:
        """Stopping, past stop_timeout, and the file failed its last try: no more waiting on it."""
        deadline = self._stop_deadline
        return deadline is not None and self._failing in RETRIED and time.monotonic() >= deadline

    def _write_batch(self, batch: List[tuple]) -> None:
        """Write one batch: each row into the file of its request's start time when the path is dated."""
        # One reading of the clocks' offset for the whole batch: a row's start time decides its
        # file, and it must be the start time the row is written with.
        wall_offset = time.time() - time.perf_counter()
        if self.dated is None:
            self._write_held(batch, wall_offset)
            return
        for file, period, records in split_by_file(self.dated, self.file, self._period, batch, wall_offset):
            self._use_file(file, period)
            self._write_held(records, wall_offset)

    def _use_file(self, file: str, period: Tuple[float, float]) -> None:
        """Write to ``file`` from now on: another connection, and cached ids start over."""
        if file == self.file:
            return
        self._add_tally()  # the sums are of the file written until now
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._forget_ids(self._shapers)
        self.file, self._period = file, period
        if period[0] > self._newest_period:
            self._newest_period = period[0]
            if self.keep_files is not None:
                self.dated.delete_beyond(self.keep_files, current=file)

    def _write_held(self, batch: List[tuple], wall_offset: float) -> None:
        """Write one batch, holding and retrying it while its failure is one waiting can cure."""
        delay = _FIRST_RETRY_DELAY
        while True:
            deadline = self._stop_deadline
            if self._given_up():
                # The count cannot reach log_counters either (the file is what fails): stderr says it.
                self.counters.count(self._failing, len(batch))
                return
            error = self._write(batch, wall_offset)
            if error is None:
                return
            reason = self._failed(error, len(batch))
            if reason not in RETRIED:
                self.counters.count(reason, len(batch), error)
                return
            if reason == "disk_full":
                # The size budget (or the disk) is full: the oldest rows go first, the batch after.
                self._maintain(full=True)
            pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 2, self.retry_delay)

    def _write(self, batch: List[tuple], wall_offset: float) -> Optional[Exception]:
        """One attempt at one batch, in one transaction; the error when it failed."""
        shapers = set()
        # Shaping counts bad records and bucketed values as it goes; an attempt that rolls back is
        # tried again, so its counts are taken back with it.
        counted_before = self.counters.checkpoint()
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            if not self.retention.ids_current(conn):
                # Pruning (here or in another process) deleted lookup rows: cached ids may name nothing.
                self._forget_ids(self._shapers)
            # Every row's values, one after another: the multi-row INSERTs' parameters. Plain
            # HTTP rows bind schema.COMMON_COLUMNS, the others every column.
            common: list = []
            full: list = []
            rows = 0
            id_of = self.lookups.id_of
            last_id = 0
            # The rollup sums of this process's rows not yet added to the tables (rollups.py).
            tally = self._tally if self._tally is not None else RollupTally(self.lookups.bot_of)
            added = False
            # Shaped a slice at a time, the GIL handed over between slices, in the same transaction.
            handed = time.perf_counter()

            def insert(flat: list, columns: Tuple[str, ...], everything: bool) -> None:
                """INSERT the rows of ``flat`` and drop them from it: its full statements' worth,
                or ``everything``. Rows go in as the batch is shaped, so that its parameters never
                pile up: freeing 20,000 rows' values at once held the GIL for 4 ms."""
                nonlocal handed, last_id
                width = len(columns)
                ready = len(flat) // width
                if not everything:
                    ready -= ready % ROWS_PER_STATEMENT
                start = 0
                for count in statement_sizes(ready):
                    # SQLite releases the GIL while it steps, but a short step ends before a waiting
                    # thread wakes: only the hand-over lets it in (docs/performance.md, "Writer cost").
                    if time.perf_counter() - handed >= HOLD_S:
                        hand_over()
                        handed = time.perf_counter()
                    end = start + count * width
                    last_id = conn.execute(insert_sql(count, columns), flat[start:end]).lastrowid
                    start = end
                del flat[:start]

            for start in range(0, len(batch), SLICE):
                if time.perf_counter() - handed >= HOLD_S:
                    hand_over()
                    handed = time.perf_counter()
                for shaper, records in itertools.groupby(batch[start:start + SLICE], key=operator.itemgetter(0)):
                    if shaper not in shapers:
                        shapers.add(shaper)
                        self._shapers.add(shaper)
                    rows += shaper.rows_into(records, wall_offset, id_of, common, full, self._record_failed, tally)
                if len(common) >= _FLUSH_COMMON:
                    insert(common, schema.COMMON_COLUMNS, False)
                if len(full) >= _FLUSH_FULL:
                    insert(full, schema.COLUMNS, False)
            insert(common, schema.COMMON_COLUMNS, True)
            insert(full, schema.COLUMNS, True)
            if rows:
                # Rows of one transaction under the write lock get consecutive ids.
                self.rollups.add_visits(conn, tally.visits)
                tally.visits.clear()
                tally.cover(last_id - rows + 1, last_id)
                if tally.due():
                    self.rollups.add_tally(conn, tally)
                    added = True
            stored = self.counters.persist(conn)
            conn.execute("COMMIT")
            self.counters.committed(stored)
            self._tally = None if added or not tally.first_id else tally
        except Exception as error:
            self._rollback()
            self.counters.restore(counted_before)
            # Its sums include the rows rolled back: they go, and the committed rows they held are
            # summed from the raw rows when the tables next take sums.
            self._tally = None
            # Ids inserted by the rolled-back transaction do not exist: forget every cached id.
            self._forget_ids(shapers)
            return error
        self.rows_written += rows
        self.batches_written += 1
        self._recovered()
        return None

    def _record_failed(self, error: Exception) -> None:
        """A record we cannot shape is counted, never raised."""
        self.counters.count("record_error", 1, error)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and not self._same_file():
            # The file was removed or replaced (its directory deleted, a rotation by rename):
            # writing on would go into a file nobody can see. Start over at the path.
            self._conn.close()
            self._conn = None
            self._forget_ids(self._shapers)
        if self._conn is None:
            if self.file is None:
                # Dated, and no row written yet (counters to store): the file of this moment.
                now_ms = time.time() * 1000
                self._use_file(self.dated.path_for(now_ms), self.dated.bounds(now_ms))
            if self.dated is not None:
                # A pattern may date its directories too (logs/%Y/%m.db): made as they come.
                os.makedirs(os.path.dirname(os.path.abspath(self.file)), mode=0o700, exist_ok=True)
            ensure_file(self.file)
            self._inode = file_identity(self.file)
            self._conn = self.lookups.conn = open_writer_connection(self.file, self.busy_timeout_ms, self.retention.page_limit)
        return self._conn

    def _forget_ids(self, shapers) -> None:
        """Drop cached lookup ids, here and in the shapers that may hold them."""
        self.lookups.forget()
        for shaper in list(shapers):
            shaper.forget()

    def _same_file(self) -> bool:
        """Whether the path still names the file the connection has open; checked once a second."""
        now = time.monotonic()
        if now - self._checked_at < 1.0:
            return True
        self._checked_at = now
        return file_identity(self.file) == self._inode

    def _rollback(self) -> None:
        if self._conn is not None:
            try:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._conn.close()
                self._conn = None

    def _failed(self, error: BaseException, held: int = 0) -> str:
        """Note a failed transaction (said once on stderr per episode) and return its reason."""
        reason = classify(error)
        if reason != "locked" and self._conn is not None:
            # Read-only, full, I/O error or removed file: start over with a fresh connection.
            try:
                self._conn.close()
            finally:
                self._conn = None
        if self._failing is None and reason in RETRIED:
            print(f"asgi_log_to_sqlite: {self.path}: cannot write ({reason}: {type(error).__name__}: {error}); "
                  f"holding {held} record(s) and retrying; new records are counted as queue_full only "
                  f"once {self.queue_size} are waiting", file=sys.stderr, flush=True)
        self._failing = reason
        return reason

    def _recovered(self) -> None:
        if self._failing is not None:
            print(f"asgi_log_to_sqlite: {self.path}: writing resumed after {self._failing}", file=sys.stderr, flush=True)
            self._failing = None


# ---- one writer per file per process ------------------------------------------------------
_writers: Dict[Tuple[int, str], Writer] = {}
_writers_lock = threading.Lock()


def writer_for(path: str, **options: Any) -> Writer:
    """The shared writer of ``path`` in this process; created (not started) on first use.

    Options take effect when the writer is first created; later constructions reuse it.
    """
    key = (os.getpid(), os.path.realpath(path))
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            check_writable(DatedPath(path).root_file() if is_dated(path) else path)
            writer = _writers[key] = Writer(path, **options)
        return writer


def close_all(timeout: Optional[float] = None) -> None:
    """Flush and stop every writer of this process (registered with atexit)."""
    with _writers_lock:
        writers = [w for (pid, _), w in _writers.items() if pid == os.getpid()]
    for writer in writers:
        writer.close(timeout)


atexit.register(close_all)
