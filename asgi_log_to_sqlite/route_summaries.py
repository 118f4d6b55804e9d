"""Per-route sums of the detailed rollups: what the lists of routes and their percentiles read.

rollup_hourly and rollup_daily keep a row per route (or path), method, status class, bot flag and
latency bucket, so that a query can narrow on any of them. A list of routes then sums dozens of
rows per route and day: 1,266,499 rows for the 30 days of a 10,000,000-row log, where these
tables hold 31,620 (per route) and 655,504 (per route and bucket), 0.1% and 1.5% of the file.
They are sums of the detailed rows, made from the same groups in the same transaction
(rollups._add_batch), from the detailed tables themselves where those change as a whole (an
upgrade, a rebuild), and merged as they are:

- ``rollup_routes_daily``, per day and route (or path): requests, those of bots, 4xx, 5xx,
  response bytes, the duration's sum, the requests that have one, and the longest;
- ``rollup_route_latency_daily``, per day, route (or path) and latency bucket of the timed
  requests: requests and the longest duration, for percentiles per route.

There are no hourly ones: a query reads rollup_hourly itself for the hours of a range outside its
whole days. Per hour, the sums per route of an imported log (a row per path and hour) are nearly
as many rows as rollup_hourly, and cost the import another tenth of its speed; the latency per route
would be two thirds of rollup_hourly's rows on the log above.

Past the size budget retention deletes them after the detailed rows, before the site's totals.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import sqlite_utils

from .inserts import statement_sizes

UNITS = (("hourly", "hour"), ("daily", "day"))
# Rows upserted by add_sums between two hand-overs of the GIL: about half a millisecond.
HAND_OVER_ROWS = 256


@dataclass(frozen=True)
class Summary:
    """Tables rollup_{name}_hourly and _daily (of ``periods``): ``sums`` of the detailed rows ``where``, per ``key``.

    ``sums`` is (column, aggregate over detailed rows); an aggregate starting "max(" keeps the
    largest when sums are added, any other adds up.
    """

    name: str
    key: Tuple[str, ...]
    sums: Tuple[Tuple[str, str], ...]
    where: str = "true"
    periods: Tuple[Tuple[str, str], ...] = UNITS

    def tables(self) -> Iterator[Tuple[str, str]]:
        """(table, unit column) of each of its tables: the hourly and the daily one, or the daily only."""
        for period, unit in self.periods:
            yield f"rollup_{self.name}_{period}", unit

    @property
    def columns(self) -> Tuple[str, ...]:
        return self.key + tuple(column for column, _ in self.sums)

    def add_sql(self, table: str, unit: str, source: str, unit_of: str, where: str = "true") -> str:
        """INSERT adding the detailed rows of ``source`` (a table, or a subquery with its columns)
        that match ``where`` to ``table``, ``unit_of`` giving each row's unit."""
        listed = ", ".join(self.columns)
        aggregates = ", ".join(aggregate for _, aggregate in self.sums)
        grouped = ", ".join((unit_of,) + self.key)
        return (f"INSERT INTO main.{table} ({unit}, {listed}) SELECT {unit_of}, {', '.join(self.key)}, {aggregates} "
                f"FROM {source} WHERE {self.where} AND {where} GROUP BY {grouped} "
                f"ON CONFLICT ({unit}, {', '.join(self.key)}) DO UPDATE SET {self.adding()}")

    def upsert_sql(self, table: str, unit: str, rows: int) -> str:
        """INSERT of ``rows`` rows of (unit, key, sums) given as parameters, added to what is there."""
        return _upsert_sql(self, table, unit, rows)

    def adding(self) -> str:
        """The upsert's SET: what a row already there becomes with ``excluded`` added."""
        # max(a, NULL) is NULL in SQL: a route's first timed request must not be lost to an untimed row.
        return ", ".join(
            f"{column} = coalesce(max({column}, excluded.{column}), {column}, excluded.{column})"
            if aggregate.startswith("max(") else f"{column} = {column} + excluded.{column}"
            for column, aggregate in self.sums)


ROUTES = Summary("routes", ("route_id", "path_id"), (
    ("hits", "sum(hits)"),
    ("bots", "sum(hits * is_bot)"),
    ("client_errors", "sum(hits * (status_class = 4))"),
    ("server_errors", "sum(hits * (status_class = 5))"),
    ("bytes", "sum(bytes)"),
    ("duration_us_sum", "sum(duration_us_sum)"),
    ("timed", "sum(hits * (bucket >= 0))"),
    ("duration_us_max", "max(duration_us_max)"),
), periods=UNITS[1:])
ROUTE_LATENCY = Summary("route_latency", ("route_id", "path_id", "bucket"), (
    ("hits", "sum(hits)"),
    ("duration_us_max", "max(duration_us_max)"),
), where="bucket >= 0", periods=UNITS[1:])
SUMMARIES = (ROUTES, ROUTE_LATENCY)
TABLES = tuple(table for summary in SUMMARIES for table, _ in summary.tables())
# Lookup table -> the (table, column) pairs here that hold its ids, so that retention keeps them.
REFERENCES: Dict[str, Tuple[Tuple[str, str], ...]] = {
    lookup: tuple((table, column) for summary in SUMMARIES for table, _ in summary.tables())
    for lookup, column in (("routes", "route_id"), ("paths", "path_id"))
}
DETAILED = {"hour": "rollup_hourly", "day": "rollup_daily"}


@functools.lru_cache(maxsize=32)
def _upsert_sql(summary: Summary, table: str, unit: str, rows: int) -> str:
    row = "(" + ", ".join("?" * (1 + len(summary.columns))) + ")"
    return (f"INSERT INTO main.{table} ({unit}, {', '.join(summary.columns)}) VALUES {', '.join([row] * rows)} "
            f"ON CONFLICT ({unit}, {', '.join(summary.key)}) DO UPDATE SET {summary.adding()}")


def create_tables(db: sqlite_utils.Database) -> None:
    """Create the tables (schema version 6) and sum them from the detailed rollups already there."""
    for summary in SUMMARIES:
        for table, unit in summary.tables():
            columns = {unit: int, **dict.fromkeys(summary.columns, int)}
            not_null = (unit,) + tuple(column for column in summary.columns if column != "duration_us_max")
            sql = db.create_table_sql(table, columns, pk=(unit,) + summary.key, not_null=not_null,
                                      if_not_exists=True)
            # WITHOUT ROWID: the key is the table's only B-tree, so an upsert is one seek, not two.
            db.conn.execute(sql.rstrip().rstrip(";") + " WITHOUT ROWID")
            db.conn.execute(summary.add_sql(table, unit, f"main.{DETAILED[unit]}", unit))


def add_keyed(conn, keyed: Dict[str, str]) -> None:
    """Add detailed rows given per unit as a subquery (``keyed``: unit -> SQL with the detailed
    tables' columns, the unit as ``unit``) to every summary, in the caller's transaction."""
    for summary in SUMMARIES:
        for table, unit in summary.tables():
            conn.execute(summary.add_sql(table, unit, f"({keyed[unit]})", "unit"))


def replace_from_detailed(conn, hours: str) -> None:
    """Sum again, from rollup_hourly and rollup_daily, the hours in ``hours`` (a subquery of hour
    numbers) and their days: after a rebuild replaced those detailed rows."""
    for summary in SUMMARIES:
        for table, unit in summary.tables():
            within = f"hour IN {hours}" if unit == "hour" else f"day IN (SELECT hour / 24 FROM {hours})"
            conn.execute(f"DELETE FROM main.{table} WHERE {within}")
            conn.execute(summary.add_sql(table, unit, f"main.{DETAILED[unit]}", unit, within))


def add_sums(conn, summary: Summary, table: str, unit: str, sums: Dict[tuple, List[int]],
             hand_over: Optional[Callable[[], None]] = None) -> None:
    """Add ``sums`` ((unit, key) -> values in ``summary.sums``' order), summed by the caller, to
    ``table``, emptying it.

    ``hand_over`` is called every HAND_OVER_ROWS rows, each statement's parameters built just
    before it: tens of thousands of sums shaped, or upserted, in one go would keep a thread waiting
    for the GIL for milliseconds (a statement's step ends before a waiting thread wakes). The sums
    are taken out of the dict as they go for the same reason: freeing thousands of them at once,
    when the caller dropped the dict, held the GIL for about a millisecond.
    """
    since = 0
    take = sums.popitem
    for count in statement_sizes(len(sums)):
        if hand_over is not None and since >= HAND_OVER_ROWS:
            hand_over()
            since = 0
        flat = [value for key, values in (take() for _ in range(count)) for value in (*key, *values)]
        conn.execute(summary.upsert_sql(table, unit, count), flat)
        since += count
