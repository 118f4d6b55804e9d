"""Merge log files into one: set-based SQL between ATTACHed databases, and the transfer rotating.py splits with.

merge_files copies whole sources; a Transfer copies the rows of one source whose start times lie
in a window (the whole file for merge, one period for rotating.rotate_file) into one destination.

A destination keeps a ledger, ``log_merged_sources``: one row per source file (its ``log_meta``
file_id) and window of start times it took rows from, with the highest ``request_log`` id it
copied. Running again copies only the rows above that id, so nothing is added twice, and a source
that grew contributes its new rows only.

Rollups: on a source's first merge its rollup tables are added as they are (they also count the
rows it pruned), and the raw rows copied up to the id read in that same transaction are not added
again; rows beyond that id add their counts as they are copied. Visitors are sets of hashes: the
source's sets are added whole each time, which adds nobody twice.

Lookup ids are mapped per chunk, for the values that chunk's rows use, through temp.map_<table>
(old_id, new_id): a lookup row the destination's retention removed meanwhile is made again.
"""
from __future__ import annotations

import json
import os
import sqlite3
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import rollups, route_summaries, toplists
from .failures import is_locked
from .merge_setup import LEDGER, Attached, MergeError, check_log, file_id, has_table, now_text, prepare, transaction
from .rotation import is_dated
from .schema import LOOKUPS

# A live logger on the destination waits for at most one chunk's transaction: each is sized to take
# about CHUNK_SECONDS, from CHUNK_ROWS rows at first (a chunk of rows with many new lookup values is slower).
CHUNK_SECONDS = 0.05
CHUNK_ROWS = 2_000
_CHUNK_LIMITS = (200, 50_000)
HOUR_MS, DAY_MS = 3_600_000, 86_400_000   # the units of the rollup tables' hour and day columns
# The window of a whole-file merge: every start time there is.
WHOLE = (-(2 ** 63), 2 ** 63 - 1)
LEGACY = "requests_0_1"

Progress = Callable[[int, int], None]   # (rows copied by this chunk, rows this run copies in all)


def merge_files(destination: str, sources: Sequence[str], progress: Optional[Progress] = None,
                chunk_rows: Optional[int] = None) -> List[dict]:
    """Add the rows, lookups, counters and rollups of ``sources`` to ``destination`` (created if missing).

    ``chunk_rows``: rows per transaction; by default sized to hold the write lock about CHUNK_SECONDS.

    Returns one summary per source: rows and 0.1.1 rows copied, counters added, how rollups were handled.
    """
    if is_dated(destination):
        raise MergeError(f"{destination!r}: a dated pattern; merge into one file, or split a file by date with rotate")
    for source in sources:
        check_log(source)
        if os.path.exists(destination) and os.path.samefile(source, destination):
            raise MergeError(f"{source}: is the destination itself; give another file to merge into")
    prepare(destination)
    planned: list = []
    transfers = [Transfer(destination, source, WHOLE, chunk_rows).plan(planned) for source in sources]
    total = sum(transfer.pending for transfer in transfers)
    return [transfer.run(progress, total) for transfer in transfers]


def __getattr__(name: str):
    """``merging.rotate_file``, the name cli/files.py and docs/files.md use: it lives in rotating.py.

    Looked up on first use rather than imported, because rotating.py imports this module.
    """
    if name == "rotate_file":
        from .rotating import rotate_file
        return rotate_file
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Transfer:
    """The rows of one source whose start time lies in ``window``, into one destination file.

    ``ids`` and ``legacy``: the (lowest, highest) ids of the source's rows in the window, when known
    (rotate finds them), so that each period's copy reads only its stretch of the source.
    """

    def __init__(self, destination: str, source: str, window: Tuple[int, int], chunk_rows: Optional[int],
                 ids: Optional[Tuple[int, int]] = None, legacy: Optional[Tuple[int, int]] = None):
        self.destination, self.source, self.window = destination, source, window
        self.chunk_rows, self.adaptive = chunk_rows or CHUNK_ROWS, chunk_rows is None
        self.ids, self.legacy = ids, legacy
        self.pending = self.pending_legacy = 0   # rows, and 0.1.1 rows, that run() will copy

    # ---- before anything is written ------------------------------------------------------
    def plan(self, planned: list) -> "Transfer":
        """Check that nothing would be counted twice, and count the rows to copy; writes nothing.

        ``planned``: what the transfers planned before this one in the same run will record.
        """
        with self._open() as conn:
            own_id, self.file_id = file_id(conn, "main"), file_id(conn, "src")
            if self.file_id == own_id:
                raise MergeError(f"{self.source}: is the destination's own log (file_id {own_id}), or a copy of it")
            entry = self._entry(conn)
            last = entry["last_row_id"] if entry else 0
            newest = conn.execute("SELECT coalesce(max(id), 0) FROM src.request_log").fetchone()[0]
            if newest < last:
                raise MergeError(
                    f"{self.source}: its newest row id ({newest}) is below the {last} recorded when it was last "
                    f"merged into {self.destination}: its rows were all pruned and their numbering restarted, "
                    "or it is an older copy of that file")
            for origin, window, via, path, *_ in [(self.file_id, self.window, None, None)] + self._carried(conn):
                if origin == own_id:
                    raise MergeError(f"{self.source}: holds rows merged from {self.destination} itself; "
                                     "merging them back would count them twice")
                clash = self._clash(conn, origin, window, via, planned)
                if clash:
                    whose = "its own" if path is None else f"{path} (file_id {origin})"
                    raise MergeError(f"{self.source}: holds rows of {whose} that {self.destination} {clash}; "
                                     "merging would count them twice")
                planned.append((self.destination, origin, window, via))
            low, high = self._id_range(conn, last)
            self.pending = conn.execute(
                "SELECT count(*) FROM src.request_log WHERE id > ? AND id <= ? AND start_ms >= ? AND start_ms < ?",
                (low, high, *self.window)).fetchone()[0]
            if has_table(conn, "src", LEGACY) and (self.legacy is not None or self.ids is None):
                self.pending_legacy = conn.execute(
                    f"SELECT count(*) FROM src.{LEGACY} WHERE rowid > ? AND start * 1000 >= ? AND start * 1000 < ?",
                    (entry["legacy_rowid"] if entry else 0, *self.window)).fetchone()[0]
        return self

    def _clash(self, conn, origin: str, window: Tuple[int, int], via: Optional[str], planned: list) -> Optional[str]:
        """How the destination already holds rows of ``origin`` in ``window`` other than through ``via``."""
        lo, hi = window
        for first, last, their_via, path in conn.execute(
                f"SELECT first_ms, last_ms, via, path FROM main.{LEDGER} WHERE file_id = ? AND first_ms < ? AND ? < last_ms",
                (origin, hi, lo)):
            if (first, last) != window or their_via != via:
                if their_via is None:
                    return f"already has from {path}"
                through = conn.execute(f"SELECT path FROM main.{LEDGER} WHERE file_id = ? AND via IS NULL",
                                       (their_via,)).fetchone()
                return f"already has through {through[0] if through else 'log file ' + their_via}"
        for destination, other, (first, last), other_via in planned:
            # The same file twice in one run is harmless (the second adds nothing); two routes to one origin are not.
            if (destination == self.destination and other == origin and first < hi and lo < last
                    and ((first, last), other_via) != (window, via)):
                return "also gets from another file of this run"
        return None

    def _carried(self, conn) -> List[tuple]:
        """The source's own merged sources cut to this window, recorded by the destination too.

        Each is (origin, window, via, path, last_row_id, rows).
        """
        if not has_table(conn, "src", LEDGER):
            return []
        lo, hi = self.window
        carried = []
        for origin, first, last, path, last_row_id, rows in conn.execute(
                f"SELECT file_id, first_ms, last_ms, path, last_row_id, rows FROM src.{LEDGER}"):
            first, last = max(first, lo), min(last, hi)
            if first < last:
                carried.append((origin, (first, last), self.file_id, path, last_row_id, rows))
        return carried

    def _entry(self, conn) -> Optional[dict]:
        cursor = conn.execute(f"SELECT * FROM main.{LEDGER} WHERE {_KEY}", (self.file_id, *self.window))
        row = cursor.fetchone()
        return None if row is None else dict(zip([c[0] for c in cursor.description], row))

    def _taken(self, conn, column: str) -> int:
        """How far the ledger says this source has been copied (read inside a transaction, it is exact)."""
        return conn.execute(f"SELECT {column} FROM main.{LEDGER} WHERE {_KEY}", (self.file_id, *self.window)).fetchone()[0]

    def _id_range(self, conn, last: int) -> Tuple[int, int]:
        """(exclusive, inclusive) bounds of the source ids still to copy."""
        newest = conn.execute("SELECT coalesce(max(id), 0) FROM src.request_log").fetchone()[0]
        if self.ids is None:
            return last, newest
        return max(last, self.ids[0] - 1), max(last, min(newest, self.ids[1]))

    # ---- copying -------------------------------------------------------------------------
    def run(self, progress: Optional[Progress], total: int) -> dict:
        """Copy what ``plan`` found, in chunked transactions; returns what was done."""
        with self._open() as conn:
            # Before the chunks, so that each has at most a live writer's new rows to sum under its
            # lock (a file just upgraded to schema 4 has all of them to sum); after, so that the copied
            # rows are counted now.
            _catch_up_lists(conn)
            first_merge = self._entry(conn) is None
            rollup_rows = self._begin(conn) if first_merge else 0
            entry = self._entry(conn)
            copied = self._copy_rows(conn, entry, progress, total)
            legacy = self._copy_legacy(conn, entry) if has_table(conn, "src", LEGACY) else 0
            counted = self._finish(conn)
            _catch_up_lists(conn)
        return {"source": self.source, "file_id": self.file_id, "first_merge": first_merge, "rows": copied,
                "legacy_rows": legacy, "counters": counted, "rollup_rows": rollup_rows}

    def _begin(self, conn) -> int:
        """The first transaction for a new source: its rollups (of the window), and its row in the ledger.

        Returns the rollup rows merged (hourly and daily).
        """
        with transaction(conn):
            merged = {}
            if self._entry(conn) is not None:
                return 0   # another merge of this source began first
            if has_table(conn, "src", "rollup_hourly"):
                schema = "src" if self.window == WHOLE else self._rollups_of_window(conn)
                merged = rollups.merge_from(conn, schema, self._map_rollup_ids(conn, schema))
            # Read in the transaction that read the rollups: the rows up to this id are counted in them.
            newest = conn.execute("SELECT coalesce(max(id), 0) FROM src.request_log").fetchone()[0]
            rolled_up_to = min(newest, _rollups_mark(conn, newest))
            merged["toplists"], listed_to = self._merge_toplists(conn, newest)
            conn.execute(
                f"INSERT INTO main.{LEDGER} (file_id, first_ms, last_ms, via, path, rolled_up_to, listed_to, counters, "
                "merged_at) VALUES (?, ?, ?, NULL, ?, ?, ?, '{}', ?)",
                (self.file_id, *self.window, os.path.abspath(self.source), rolled_up_to, listed_to, now_text()))
        return merged.get("rollup_hourly", 0) + merged.get("rollup_daily", 0)

    def _merge_toplists(self, conn, newest: int) -> Tuple[int, int]:
        """The source's top lists (of the window); returns the rows merged and the source id up to
        which they count its rows. Its rows above that are copied uncounted, and the destination
        sums them behind, in slices, as a writer's: summing them here, under this one transaction's
        lock, took seconds for a file just upgraded to schema 4 (all of its rows above the mark)."""
        if not toplists.has_tables(conn, "src"):
            return 0, 0
        schema = "src" if self.window == WHOLE else "period"
        listed_to = min(toplists.marked(conn, "src"), newest)
        for lookup, pairs in toplists.REFERENCES.items():
            ids = [f"SELECT [{column}] FROM {schema}.[{table}]" for table, column in pairs]
            self._map(conn, lookup, f"WHERE s.id IN ({' UNION '.join(ids)})")
        maps = {lookup: f"temp.map_{lookup}" for lookup in toplists.REFERENCES}
        return toplists.merge_from(conn, schema, maps), listed_to

    def _rollups_of_window(self, conn) -> str:
        """The source's rollup rows of this window, copied into the in-memory schema ``period``.

        A row goes to the window holding the start of its hour or day, so that each goes to one file.
        """
        for table, _, where in _ROLLUP_TABLES:
            if not has_table(conn, "src", table):
                continue  # the top lists of a file made before version 4
            conn.execute(f"DROP TABLE IF EXISTS period.{table}")
            conn.execute(f"CREATE TABLE period.{table} AS SELECT * FROM src.{table} WHERE {where}", self.window)
        return "period"

    def _map_rollup_ids(self, conn, schema: str) -> Dict[str, str]:
        """The lookup values the rollups of ``schema`` name, put in main and mapped: merge_from's id_maps."""
        for lookup, pairs in rollups.REFERENCES.items():
            ids = " UNION ".join(f"SELECT [{column}] FROM {schema}.[{table}]" for table, column in pairs)
            self._map(conn, lookup, f"WHERE s.id IN ({ids})")
        return {lookup: f"temp.map_{lookup}" for lookup in rollups.REFERENCES}

    def _copy_rows(self, conn, entry: dict, progress: Optional[Progress], total: int) -> int:
        lo, hi = self.window
        last, newest = self._id_range(conn, entry["last_row_id"])
        rolled_up_to, done = entry["rolled_up_to"], 0
        listed_to = rolled_up_to if entry.get("listed_to") is None else entry["listed_to"]
        update = _CountsOnly().update
        references = _references(conn, "main", "request_log")
        condition = "{s}id > ?1 AND {s}id <= ?2 AND {s}start_ms >= ?3 AND {s}start_ms < ?4"
        insert = _remapping_insert(conn, "request_log", references, condition.format(s="s."))
        condition = condition.format(s="")
        while last < newest:
            last = max(last, self._taken(conn, "last_row_id"))
            if last >= newest:
                break
            # A chunk lies wholly at or below both of listed_to (its rows are in the top lists already)
            # and rolled_up_to (in the rollups), between them (in one), or above both (in neither).
            ceiling = newest
            for bound in sorted((listed_to, rolled_up_to)):
                if last < bound:
                    ceiling = min(newest, bound)
                    break
            found = conn.execute(
                "SELECT id FROM src.request_log WHERE id > ? AND id <= ? AND start_ms >= ? AND start_ms < ? "
                "ORDER BY id LIMIT 1 OFFSET ?", (last, ceiling, lo, hi, self.chunk_rows - 1)).fetchone()
            upper = found[0] if found else ceiling
            parameters = (last, upper, lo, hi)
            with transaction(conn) as held:
                if self._taken(conn, "last_row_id") > last:
                    continue   # another merge of this source ran meanwhile: go on from where it got to
                self._map_used(conn, references, "request_log", condition, parameters)
                before = conn.execute("SELECT coalesce(max(id), 0) FROM main.request_log").fetchone()[0]
                rows = conn.execute(insert, parameters).rowcount
                if rows and upper > rolled_up_to:
                    update(conn, before + 1, before + rows)
                elif rows:
                    rollups.WATERMARK.counted_already(conn, before, before + rows)
                if rows and upper <= listed_to:
                    toplists.counted_already(conn, before, before + rows)
                conn.execute(f"UPDATE main.{LEDGER} SET last_row_id = ?, rows = rows + ? WHERE {_KEY}",
                             (upper, rows, self.file_id, lo, hi))
            last, done = upper, done + rows
            self._resize(held.seconds)
            if progress is not None and rows:
                progress(rows, total)
        return done

    def _copy_legacy(self, conn, entry: dict) -> int:
        """The 0.1.1 table, kept as 0.1.1 stored it (as the upgrade keeps it), its lookup ids remapped."""
        lo, hi = self.window
        last = entry["legacy_rowid"]
        newest = conn.execute(f"SELECT coalesce(max(rowid), 0) FROM src.{LEGACY}").fetchone()[0]
        if self.legacy is not None:
            last, newest = max(last, self.legacy[0] - 1), min(newest, self.legacy[1])
        elif self.ids is not None:
            return 0  # rotate found no 0.1.1 rows in this period
        if last >= newest:
            return 0
        if not has_table(conn, "main", LEGACY):
            with transaction(conn):
                self._create_legacy(conn)
        references = _references(conn, "src", LEGACY)
        condition = "{s}rowid > ?1 AND {s}rowid <= ?2 AND {s}start * 1000 >= ?3 AND {s}start * 1000 < ?4"
        insert = _remapping_insert(conn, LEGACY, references, condition.format(s="s."))
        condition = condition.format(s="")
        done = 0
        while last < newest:
            upper = min(newest, last + self.chunk_rows)
            parameters = (last, upper, lo, hi)
            with transaction(conn) as held:
                if self._taken(conn, "legacy_rowid") > last:
                    last = self._taken(conn, "legacy_rowid")
                    continue
                self._map_used(conn, references, LEGACY, condition, parameters)
                rows = conn.execute(insert, parameters).rowcount
                conn.execute(f"UPDATE main.{LEDGER} SET legacy_rowid = ? WHERE {_KEY}", (upper, self.file_id, lo, hi))
            last, done = upper, done + rows
            self._resize(held.seconds)
        return done

    def _resize(self, seconds: float) -> None:
        """The next chunk's size, from how long this one held the lock (unless the caller fixed it)."""
        if self.adaptive and seconds > 0:
            wanted = self.chunk_rows * CHUNK_SECONDS / seconds
            # At most doubled at a time: one fast chunk of repeated values says little about the next.
            self.chunk_rows = int(min(max(wanted, _CHUNK_LIMITS[0]), 2 * self.chunk_rows, _CHUNK_LIMITS[1]))

    @staticmethod
    def _create_legacy(conn) -> None:
        # The source's DDL, verbatim: the 0.1.1 table, and the requests view that reads it beside request_log.
        table = conn.execute("SELECT sql FROM src.sqlite_master WHERE type = 'table' AND name = ?", (LEGACY,)).fetchone()
        view = conn.execute("SELECT sql FROM src.sqlite_master WHERE type = 'view' AND name = 'requests'").fetchone()
        conn.execute(table[0])
        if view is not None:
            conn.execute("DROP VIEW IF EXISTS main.requests")
            conn.execute(view[0])

    def _finish(self, conn) -> int:
        """Counters added since the last run, and the source's own merged sources, into the ledger.

        log_counters cannot be split by time: for rotate, each reason goes to the period of its
        first_ms, which never changes, so that running again adds to the same file.
        """
        lo, hi = self.window
        key = (self.file_id, lo, hi)
        with transaction(conn):
            seen = json.loads(conn.execute(f"SELECT counters FROM main.{LEDGER} WHERE {_KEY}", key).fetchone()[0] or "{}")
            added = 0
            for reason, count, first_ms, last_ms, last_error in conn.execute(
                    "SELECT reason, count, first_ms, last_ms, last_error FROM src.log_counters "
                    "WHERE coalesce(first_ms, 0) >= ? AND coalesce(first_ms, 0) < ?", (lo, hi)).fetchall():
                delta = count - seen.get(reason, 0)
                seen[reason] = count
                if delta > 0:
                    conn.execute(_ADD_COUNT, (reason, delta, first_ms, last_ms, last_error))
                    added += delta
            conn.execute(f"UPDATE main.{LEDGER} SET counters = ?, merged_at = ?, path = ? WHERE {_KEY}",
                         (json.dumps(seen, sort_keys=True), now_text(), os.path.abspath(self.source), *key))
            if has_table(conn, "src", "rollup_hourly"):
                # Sets: adding the source's visitors again adds none twice, and covers its copied rows.
                for table, unit, where in _ROLLUP_TABLES[2:4]:
                    conn.execute(f"INSERT OR IGNORE INTO main.{table} ({unit}, is_bot, visitor) "
                                 f"SELECT {unit}, is_bot, visitor FROM src.{table} WHERE {where}", (lo, hi))
            for origin, (first, last), via, path, last_row_id, rows in self._carried(conn):
                conn.execute(
                    f"INSERT INTO main.{LEDGER} (file_id, first_ms, last_ms, via, path, last_row_id, rows, merged_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (file_id, first_ms, last_ms) DO UPDATE SET "
                    "last_row_id = excluded.last_row_id, rows = excluded.rows, merged_at = excluded.merged_at",
                    (origin, first, last, via, path, last_row_id, rows, now_text()))
        return added

    # ---- lookup ids ----------------------------------------------------------------------
    def _map_used(self, conn, references: Dict[str, str], table: str, condition: str, parameters: tuple) -> None:
        """The lookup values used by the rows of ``table`` that match ``condition``, put in main and mapped."""
        used: Dict[str, List[str]] = {}
        for column, lookup in references.items():
            used.setdefault(lookup, []).append(column)
        for lookup, columns in used.items():
            ids = " UNION ".join(f"SELECT [{column}] FROM src.[{table}] WHERE {condition}" for column in columns)
            self._map(conn, lookup, f"WHERE s.id IN ({ids})", parameters)

    @staticmethod
    def _map(conn, table: str, where: str, parameters: tuple = ()) -> None:
        """Put the source's values of ``table`` matching ``where`` in main, and map them in temp.map_<table>."""
        # In the source's id order, so that new values get ids in the order the source first saw them.
        columns = ", ".join(f"[{c}]" for c in _shared_columns(conn, table) if c != "id")
        conn.execute(f"DELETE FROM temp.map_{table}")
        conn.execute(f"INSERT INTO main.[{table}] ({columns}) SELECT {columns} FROM src.[{table}] s "
                     f"{where or 'WHERE true'} ORDER BY s.id ON CONFLICT (name) DO NOTHING", parameters)
        conn.execute(f"INSERT INTO temp.map_{table} (old_id, new_id) SELECT s.id, m.id FROM src.[{table}] s "
                     f"JOIN main.[{table}] m ON m.name = s.name {where}", parameters)

    def _open(self) -> "Attached":
        return Attached(self.destination, self.source)


def _rollups_mark(conn: sqlite3.Connection, newest: int) -> int:
    """The source's rollups' mark; ``newest`` for a file made before they had one (kept per batch)."""
    row = conn.execute("SELECT CAST(value AS INTEGER) FROM src.log_meta WHERE key = ?", (rollups.META_KEY,)).fetchone()
    return newest if row is None else row[0]


def _catch_up_lists(conn: sqlite3.Connection) -> None:
    """The destination's top lists caught up, a slice per transaction; a lock held elsewhere (a
    writer) leaves the rest to the writer, whose rows readers add meanwhile."""
    try:
        toplists.catch_up(conn)
        rollups.WATERMARK.catch_up(conn)
    except sqlite3.OperationalError as error:
        if not is_locked(error):
            raise


class _CountsOnly(rollups.Rollups):
    """The rollups of copied rows without their visitors: the source's visitor sets are merged whole instead.

    Hashing them again here would use the destination's salt, and count a visitor twice.
    """

    def add_visitors(self, conn: sqlite3.Connection, visits) -> int:
        return 0


# The rollup tables, their time column, and which of their rows belong to a window (bind lo, hi).
_ROLLUP_TABLES = [
    (table, unit, f"[{unit}] * {unit_ms} >= ?1 AND [{unit}] * {unit_ms} < ?2")
    for table, unit, unit_ms in (("rollup_hourly", "hour", HOUR_MS), ("rollup_daily", "day", DAY_MS),
                                 ("rollup_visitors_hourly", "hour", HOUR_MS),
                                 ("rollup_visitors_daily", "day", DAY_MS), ("rollup_salts", "day", DAY_MS),
                                 ("rollup_traffic_hourly", "hour", HOUR_MS), ("rollup_traffic_daily", "day", DAY_MS))
    + tuple((table, "hour", HOUR_MS) if table.endswith("_hourly") else (table, "day", DAY_MS)
            for table in toplists.TABLES + route_summaries.TABLES)
]
# A source's own row in a destination's ledger (bind file_id, first_ms, last_ms).
_KEY = "file_id = ? AND first_ms = ? AND last_ms = ? AND via IS NULL"


_ADD_COUNT = (
    "INSERT INTO main.log_counters (reason, count, first_ms, last_ms, last_error) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count, "
    "first_ms = min(coalesce(first_ms, excluded.first_ms), coalesce(excluded.first_ms, first_ms)), "
    "last_ms = max(coalesce(last_ms, excluded.last_ms), coalesce(excluded.last_ms, last_ms)), "
    "last_error = CASE WHEN coalesce(excluded.last_ms, 0) >= coalesce(last_ms, 0) "
    "THEN coalesce(excluded.last_error, last_error) ELSE last_error END"
)


def _remapping_insert(conn: sqlite3.Connection, table: str, references: Dict[str, str], condition: str) -> str:
    """INSERT .. SELECT of ``table``'s rows from src into main with every lookup id mapped to main's."""
    columns = _shared_columns(conn, table)
    selected, joins = [], []
    for column in columns:
        if column in references:
            alias = f"m_{column}"
            joins.append(f"LEFT JOIN temp.map_{references[column]} {alias} ON {alias}.old_id = s.[{column}]")
            selected.append(f"{alias}.new_id")
        else:
            selected.append(f"s.[{column}]")
    order = "s.rowid" if table == LEGACY else "s.id"
    return (f"INSERT INTO main.[{table}] ({', '.join(f'[{c}]' for c in columns)}) SELECT {', '.join(selected)} "
            f"FROM src.[{table}] s {' '.join(joins)} WHERE {condition} ORDER BY {order}")


def _shared_columns(conn: sqlite3.Connection, table: str) -> List[str]:
    """Columns of ``table`` in both main and src (main's order), request_log's id left out: main numbers its own."""
    theirs = {row[1] for row in conn.execute(f"PRAGMA src.table_info([{table}])")}
    return [row[1] for row in conn.execute(f"PRAGMA main.table_info([{table}])")
            if row[1] in theirs and not (table == "request_log" and row[1] == "id")]


def _references(conn: sqlite3.Connection, schema: str, table: str) -> Dict[str, str]:
    """column -> lookup table, from the table's declared foreign keys."""
    return {row[3]: row[2] for row in conn.execute(f"PRAGMA {schema}.foreign_key_list([{table}])") if row[2] in LOOKUPS}


