"""The rollups behind the top lists: requests per path, per referrer and per user agent, hourly and daily.

The rollups of rollups.py are kept inside each batch's transaction. These are not: a path, a
referrer and an agent each multiply the keys of a batch, and upserting them per batch would cost
the writer more than the rest of its work. Instead they are summed behind it, up to a watermark,
``log_meta``'s ``toplists_to``: every request_log row with an id at or below it is counted in these
tables, and no row above it is. The writer moves the watermark on between batches, in slices of
at most SLICE_ROWS rows, each one transaction (``catch_up``), every CATCH_UP_EVERY_S or sooner when
that many rows wait; the commands that write a file (import, merge, rotate, prune, rollup) bring it
to the end. A reader adds the raw rows above the watermark (``TAIL``), a few seconds' worth, to
what the tables hold, so that its answer is exact however far behind the watermark is.

Like the other rollups, these outlive the raw rows: retention deletes raw rows only at or below the
watermark (it catches up first), and deletes these tables' rows only past the size budget, oldest
first. Ids only grow (retention never deletes the newest row), which is what makes one number
enough to say which rows are counted, with any number of processes writing the file.
"""
from __future__ import annotations

import sqlite3
import time
from typing import Dict, Optional, Tuple

import sqlite_utils

from .watermarks import SLICE_ROWS, Watermark

HOUR_MS = 3_600_000
META_KEY = "toplists_to"
CATCH_UP_EVERY_S = 10.0

# Each list: its name in the tables, request_log's column, the lookup table, and what it sums.
PATH_VALUES = ("hits", "client_errors", "server_errors", "bytes", "duration_us_sum", "timed")
LISTS: Tuple[Tuple[str, str, str, Tuple[str, ...]], ...] = (
    ("paths", "path_id", "paths", PATH_VALUES),
    ("referers", "referer_id", "referers", ("hits",)),
    ("agents", "user_agent_id", "user_agents", ("hits",)),
)
TABLES = tuple(f"rollup_{name}_{unit}" for name, _, _, _ in LISTS for unit in ("hourly", "daily"))
# Lookup table -> the (table, column) pairs here that hold its ids, so that retention keeps them.
REFERENCES: Dict[str, Tuple[Tuple[str, str], ...]] = {
    lookup: ((f"rollup_{name}_hourly", column), (f"rollup_{name}_daily", column))
    for name, column, lookup, _ in LISTS
}
# What each value sums per raw row (r is request_log). count(duration_us): imported lines have none.
_RAW_SUMS = {
    "hits": "count(*)",
    "client_errors": "coalesce(sum(r.http_status >= 400 AND r.http_status < 500), 0)",  # a NULL status is neither
    "server_errors": "coalesce(sum(r.http_status >= 500), 0)",
    "bytes": "coalesce(sum(r.body_size), 0)",
    "duration_us_sum": "coalesce(sum(r.duration_us), 0)",
    "timed": "count(r.duration_us)",
}


def create_tables(db: sqlite_utils.Database) -> None:
    """Create the top lists' tables (schema version 4), empty, with the watermark at 0: the writer
    sums the rows already there behind it, slice by slice."""
    for name, column, _, values in LISTS:
        for unit in ("hourly", "daily"):
            key = "hour" if unit == "hourly" else "day"
            sql = db.create_table_sql(f"rollup_{name}_{unit}", {key: int, column: int, **dict.fromkeys(values, int)},
                                      pk=(key, column), not_null=(key, column) + values, if_not_exists=True)
            # WITHOUT ROWID: the key is the table's only B-tree, so an upsert is one seek.
            db.conn.execute(sql.rstrip().rstrip(";") + " WITHOUT ROWID")
    # Where a slice's groups gather before they are added to the hourly and daily tables; emptied
    # in the same transaction. In main, not temp: see rollups.create_tables.
    db.conn.execute(db.create_table_sql("rollup_toplists_slice", {
        "list": int, "hour": int, "id": int, **dict.fromkeys(PATH_VALUES, int)}, if_not_exists=True))
    db.conn.execute("INSERT OR IGNORE INTO log_meta (key, value) VALUES (?, '0')", (META_KEY,))


def add_rows(conn: sqlite3.Connection, first_id: int, last_id: int, *, source: str = "main",
             id_maps: Optional[Dict[str, str]] = None, where: str = "true", params: tuple = ()) -> None:
    """Add the rows of ``source``.request_log with ids first_id..last_id (and ``where``, bound from
    ?3 on with ``params``) to main's top lists, inside the caller's transaction.

    ``id_maps``: for rows of another file (merge), each lookup table -> a table of (old_id, new_id)
    that gives its ids in main.
    """
    for number, (name, column, lookup, values) in enumerate(LISTS):
        if id_maps is None:
            key, join = f"coalesce(r.{column}, 0)", ""
        else:
            key, join = "coalesce(m.new_id, 0)", f" LEFT JOIN {id_maps[lookup]} m ON m.old_id = r.{column}"
        sums = ", ".join(_RAW_SUMS[value] for value in values)
        conn.execute(f"INSERT INTO main.rollup_toplists_slice (list, hour, id, {', '.join(values)}) "
                     f"SELECT {number}, r.start_ms / {HOUR_MS}, {key}, {sums} FROM {source}.request_log r{join} "
                     f"WHERE r.id BETWEEN ?1 AND ?2 AND {where} GROUP BY 2, 3", (first_id, last_id) + params)
    _add_slice(conn)


def _add_slice(conn: sqlite3.Connection) -> None:
    """Add rollup_toplists_slice to the hourly and daily tables, and empty it."""
    for number, (name, column, _, values) in enumerate(LISTS):
        listed = ", ".join(values)
        added = ", ".join(f"{value} = {value} + excluded.{value}" for value in values)
        summed = ", ".join(f"sum({value})" for value in values)
        conn.execute(f"INSERT INTO main.rollup_{name}_hourly (hour, {column}, {listed}) "
                     f"SELECT hour, id, {listed} FROM main.rollup_toplists_slice WHERE list = {number} "
                     f"ON CONFLICT (hour, {column}) DO UPDATE SET {added}")
        conn.execute(f"INSERT INTO main.rollup_{name}_daily (day, {column}, {listed}) "
                     f"SELECT hour / 24, id, {summed} FROM main.rollup_toplists_slice WHERE list = {number} "
                     f"GROUP BY 1, 2 ON CONFLICT (day, {column}) DO UPDATE SET {added}")
    conn.execute("DELETE FROM main.rollup_toplists_slice")


WATERMARK = Watermark(META_KEY, "rollup_paths_hourly", add_rows)
TAIL = WATERMARK.tail
has_tables = WATERMARK.has_tables
marked = WATERMARK.marked
set_mark = WATERMARK.set_mark
behind = WATERMARK.behind
catch_up_slice = WATERMARK.catch_up_slice
catch_up = WATERMARK.catch_up
counted_already = WATERMARK.counted_already


class CatchUp:
    """When the writer moves the watermark: every CATCH_UP_EVERY_S, or as soon as a slice's rows wait."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def run(self, conn: sqlite3.Connection, deadline: float) -> bool:
        """Catch up if it is time, until ``deadline``; True when there is nothing more to do now."""
        now = time.monotonic()
        if now - self._last < CATCH_UP_EVERY_S and behind(conn) < SLICE_ROWS:
            return True
        done = catch_up(conn, deadline)
        if done:
            self._last = now
        return done


def rebuild_hours(conn: sqlite3.Connection, hours_sql: str, params: tuple = ()) -> None:
    """Recompute the top lists of the hours ``hours_sql`` selects (a SELECT of hour numbers whose
    raw rows are all there) from those rows, inside the caller's transaction.

    Each day keeps what its other hours counted, pruned ones included: the hours' old counts are
    taken out of it and their new ones added. Rows above the watermark stay out.
    """
    if not has_tables(conn):
        return
    conn.execute("DROP TABLE IF EXISTS temp.toplist_hours")
    conn.execute(f"CREATE TEMP TABLE toplist_hours AS {hours_sql}", params)
    for name, column, _, values in LISTS:
        taken = ", ".join(f"-sum({value})" for value in values)
        added = ", ".join(f"{value} = {value} + excluded.{value}" for value in values)
        conn.execute(f"INSERT INTO main.rollup_{name}_daily (day, {column}, {', '.join(values)}) "
                     f"SELECT hour / 24, {column}, {taken} FROM main.rollup_{name}_hourly "
                     f"WHERE hour IN (SELECT * FROM temp.toplist_hours) GROUP BY 1, 2 "
                     f"ON CONFLICT (day, {column}) DO UPDATE SET {added}")
        conn.execute(f"DELETE FROM main.rollup_{name}_hourly WHERE hour IN (SELECT * FROM temp.toplist_hours)")
        conn.execute(f"DELETE FROM main.rollup_{name}_daily WHERE hits = 0")
    mark = marked(conn)
    if mark:
        add_rows(conn, 1, mark, where=f"r.start_ms / {HOUR_MS} IN (SELECT * FROM temp.toplist_hours)")
    conn.execute("DROP TABLE temp.toplist_hours")


def merge_from(conn: sqlite3.Connection, schema: str, id_maps: Dict[str, str]) -> int:
    """Add the top lists of the ATTACHed database ``schema`` to main's, inside the caller's transaction;
    ``id_maps`` as for add_rows. Returns the rows merged."""
    merged = 0
    for name, column, lookup, values in LISTS:
        listed = ", ".join(values)
        added = ", ".join(f"{value} = {value} + excluded.{value}" for value in values)
        for unit, key in (("hourly", "hour"), ("daily", "day")):
            table = f"rollup_{name}_{unit}"
            merged += conn.execute(
                f"INSERT INTO main.{table} ({key}, {column}, {listed}) "
                f"SELECT s.{key}, CASE WHEN s.{column} = 0 THEN 0 ELSE m.new_id END, {', '.join('s.' + v for v in values)} "
                f"FROM {schema}.{table} s LEFT JOIN {id_maps[lookup]} m ON m.old_id = s.{column} "
                f"WHERE true ON CONFLICT ({key}, {column}) DO UPDATE SET {added}").rowcount
    return merged


# The hours whose raw rows are all still there: as many rows (counted ones) as the paths' list counts.
# An hour whose list rows are all gone counts only if its day lost none: past the size budget the
# hourly rows go before the daily ones, and a daily row still counting them must not count them twice.
_WHOLE_HOURS = f"""
WITH n AS (SELECT start_ms / {HOUR_MS} AS hour, count(*) AS raw FROM request_log WHERE id <= ?1 GROUP BY 1),
k AS (SELECT n.hour, n.raw, (SELECT coalesce(sum(p.hits), 0) FROM rollup_paths_hourly p WHERE p.hour = n.hour) AS kept
      FROM n),
pruned AS (SELECT d.day FROM (SELECT DISTINCT hour / 24 AS day FROM k WHERE kept = 0) d
           WHERE (SELECT coalesce(sum(hits), 0) FROM rollup_paths_daily WHERE day = d.day)
               > (SELECT coalesce(sum(hits), 0) FROM rollup_paths_hourly WHERE hour >= d.day * 24 AND hour < d.day * 24 + 24))
SELECT hour FROM k WHERE raw >= kept AND (kept > 0 OR hour / 24 NOT IN (SELECT day FROM pruned))"""


def rebuild(conn: sqlite3.Connection) -> int:
    """Recompute the top lists of every hour whose raw rows are all there, from those rows (after
    correcting a lookup row, say), on ``conn`` (autocommit), in one transaction. Returns the hours rebuilt."""
    if not has_tables(conn):
        return 0
    catch_up(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        mark = marked(conn)
        hours = conn.execute(f"SELECT count(*) FROM ({_WHOLE_HOURS})", (mark,)).fetchone()[0]
        rebuild_hours(conn, _WHOLE_HOURS, (mark,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return hours
