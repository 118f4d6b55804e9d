"""Hourly and daily aggregates of request_log that outlive its raw rows, and distinct visitors.

The rollups count the rows up to a watermark (``log_meta``'s ``rollups_to``, watermarks.py). A
live writer sums its rows in Python as it shapes them (``RollupTally``) and adds the sums to the
tables every ROLLUP_EVERY_S or so, moving the mark over its rows in the same transaction: an
upsert per group per table is the dearest step, and over seconds a site's groups repeat. Rows it
did not sum itself (another process's, an import's, a writer's killed before it added its sums)
are summed from the raw rows with set-based SQL: one GROUP BY into the scratch table
``rollup_batch``, one upsert from it into ``rollup_hourly`` and one into ``rollup_daily``.
Visitors are sets, kept per batch: one SELECT DISTINCT of the batch's (hour, address, agent),
hashed in Python only where the pair is not in a small cache. docs/rollups.md has the layout,
the queries and what it costs.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
import secrets
import sqlite3
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import sqlite_utils

from . import route_summaries
from .inserts import statement_sizes
from .watermarks import SLICE_ROWS, Watermark

# Latency buckets per doubling: a duration of d microseconds is in bucket floor(8 * log2(d + 1)),
# whose geometric middle is within 4.4% of d + 1, so p50/p95/p99 read from buckets are within 10%.
BUCKETS_PER_OCTAVE = 8
NO_DURATION = -1  # the bucket of rows without a duration (imported lines)
# The bucket of each duration under 65 ms, looked up rather than computed per row (512 KB): the
# C library's log2, as SQLite's log2() in the rollup SQL.
BUCKETED_US = 1 << 16
BUCKET_OF = [int(BUCKETS_PER_OCTAVE * math.log2(us + 1)) for us in range(BUCKETED_US)]
HOUR_MS = 3_600_000
DAY_S = 86_400
# A day's salt outlives the day by this long, for requests that started before midnight and end after.
SALT_GRACE_S = 300
# Visitor hashes kept in memory per day before the cache starts over.
_HASH_CACHE_LIMIT = 10_000
# Visits hashed, or rollup groups written, between two hand-overs of the GIL: well under 1 ms.
_PER_HAND_OVER = 256
META_KEY = "rollups_to"
# A writer adds its sums this often, or sooner once it holds this many groups (about 200 bytes each).
ROLLUP_EVERY_S = 2.0
MAX_GROUPS = 8_192
# Retention sums rows above the mark once it has not moved for this long (StuckCatchUp).
STUCK_S = 10.0

KEY = ("route_id", "path_id", "method_id", "status_class", "is_bot", "bucket")
VALUES = ("hits", "bytes", "duration_us_sum", "duration_us_max")

# Lookup table -> the (rollup table, column) pairs that hold its ids (0 there means none), so that
# retention keeps every lookup row a rollup still names. user_agents is not among them: its bot
# flag is copied into the key.
REFERENCES: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "routes": (("rollup_hourly", "route_id"), ("rollup_daily", "route_id")) + route_summaries.REFERENCES["routes"],
    "paths": (("rollup_hourly", "path_id"), ("rollup_daily", "path_id")) + route_summaries.REFERENCES["paths"],
    "methods": (("rollup_hourly", "method_id"), ("rollup_daily", "method_id")),
}

_COLUMNS = ", ".join(KEY + VALUES)
_KEY = ", ".join(KEY)
_ADD = ("hits = hits + excluded.hits, bytes = bytes + excluded.bytes, "
        "duration_us_sum = duration_us_sum + excluded.duration_us_sum, "
        "duration_us_max = max(duration_us_max, excluded.duration_us_max)")

# Per row, as little as SQLite can do: raw values grouped as they are (NULLs included), the route,
# or minus the path, in one column (rollup_batch.route_id), and the latency bucket. Every
# expression here is paid 1,000 times a batch; the same work per group, below, 200 times at most.
_BATCH_SUMS = f"""
INSERT INTO rollup_batch (hour, route_id, method_id, status_class, is_bot, bucket, {", ".join(VALUES)})
SELECT r.start_ms / {HOUR_MS}, coalesce(r.route_id, -r.path_id), r.method_id, r.http_status / 100, u.is_bot,
       CAST({BUCKETS_PER_OCTAVE} * log2(r.duration_us + 1) AS INTEGER),
       count(*), sum(r.body_size), sum(r.duration_us), max(r.duration_us)
FROM request_log r LEFT JOIN user_agents u ON u.id = r.user_agent_id
WHERE {{where}}
GROUP BY 2, 6, 3, 4, 5, 1"""
_FILL_BATCH = _BATCH_SUMS.format(where="r.id BETWEEN ?1 AND ?2")
# Per group: rollup_batch's raw values as the rollup key (unknowns 0, no duration -1), named as
# the detailed tables' columns for route_summaries.
_KEYED = f"""
SELECT {{unit}} AS unit, CASE WHEN route_id > 0 THEN route_id ELSE 0 END AS route_id,
       CASE WHEN route_id < 0 THEN -route_id ELSE 0 END AS path_id, coalesce(method_id, 0) AS method_id,
       coalesce(status_class, 0) AS status_class, coalesce(is_bot, 0) != 0 AS is_bot,
       coalesce(bucket, {NO_DURATION}) AS bucket, hits, coalesce(bytes, 0) AS bytes,
       CASE WHEN bucket IS NULL THEN 0 ELSE coalesce(duration_us_sum, 0) END AS duration_us_sum,
       CASE WHEN bucket IS NULL THEN NULL ELSE duration_us_max END AS duration_us_max
FROM rollup_batch WHERE true"""
_BATCH_KEYED = {"hour": _KEYED.format(unit="hour"), "day": _KEYED.format(unit="hour / 24")}
# The upsert takes rows one after another, so two hours of one day meet on the same daily row.
_TO_HOURLY = (f"INSERT INTO rollup_hourly (hour, {_COLUMNS}) {_KEYED.format(unit='hour')} "
              f"ON CONFLICT (hour, {_KEY}) DO UPDATE SET {_ADD}")
_TO_DAILY = (f"INSERT INTO rollup_daily (day, {_COLUMNS}) {_KEYED.format(unit='hour / 24')} "
             f"ON CONFLICT (day, {_KEY}) DO UPDATE SET {_ADD}")
# The whole site's totals per hour and day, without route, path or method: what the over-time
# charts, the headline figures and the site's percentiles read, a few dozen rows an hour where
# rollup_hourly has thousands. Summed from rollup_batch, whose groups are already keyed.
TRAFFIC_KEY = ("status_class", "is_bot", "bucket")
_TRAFFIC_COLUMNS = ", ".join(TRAFFIC_KEY + VALUES)
_TRAFFIC_KEY = ", ".join(TRAFFIC_KEY)
_TRAFFIC_SUMS = f"""
SELECT {{unit}}, coalesce(status_class, 0), coalesce(is_bot, 0) != 0, coalesce(bucket, {NO_DURATION}), sum(hits),
       coalesce(sum(bytes), 0), sum(CASE WHEN bucket IS NULL THEN 0 ELSE coalesce(duration_us_sum, 0) END),
       max(CASE WHEN bucket IS NULL THEN NULL ELSE duration_us_max END)
FROM {{source}} GROUP BY 1, 2, 3, 4"""
# Summed once per batch into a temporary table of the connection's own (a few dozen rows), and
# added from there to both tables: one sort of rollup_batch's groups instead of two.
_TRAFFIC_BATCH = ("CREATE TEMP TABLE IF NOT EXISTS rollup_traffic_batch "
                  f"(hour INTEGER, {', '.join(f'{column} INTEGER' for column in TRAFFIC_KEY + VALUES)})")
_FILL_TRAFFIC_BATCH = (f"INSERT INTO temp.rollup_traffic_batch (hour, {_TRAFFIC_COLUMNS}) "
                       f"{_TRAFFIC_SUMS.format(unit='hour', source='main.rollup_batch')}")
_TO_TRAFFIC_HOURLY = (f"INSERT INTO rollup_traffic_hourly (hour, {_TRAFFIC_COLUMNS}) "
                      f"SELECT hour, {_TRAFFIC_COLUMNS} FROM temp.rollup_traffic_batch WHERE true "
                      f"ON CONFLICT (hour, {_TRAFFIC_KEY}) DO UPDATE SET {_ADD}")
_TO_TRAFFIC_DAILY = (f"INSERT INTO rollup_traffic_daily (day, {_TRAFFIC_COLUMNS}) "
                     f"SELECT hour / 24, {_TRAFFIC_KEY}, sum(hits), sum(bytes), sum(duration_us_sum), "
                     f"max(duration_us_max) FROM temp.rollup_traffic_batch GROUP BY 1, 2, 3, 4 "
                     f"ON CONFLICT (day, {_TRAFFIC_KEY}) DO UPDATE SET {_ADD}")
# The same totals from the detailed tables, whose keys hold no NULLs: for rebuild and upgrades.
_TRAFFIC_FROM = """
INSERT INTO {table} ({unit}, {columns}) SELECT {unit}, {key}, sum(hits), sum(bytes), sum(duration_us_sum),
       max(duration_us_max) FROM {source} WHERE {where} GROUP BY {unit}, {key}
ON CONFLICT ({unit}, {key}) DO UPDATE SET {add}"""
# Distinct ids first, names after: two lookups per distinct pair instead of per row. The forwarded
# address (behind a trusted proxy) is the client's; the socket peer is the proxy's.
_VISITS = """
SELECT v.hour, coalesce(ip.name, ''), coalesce(u.name, ''), coalesce(u.is_bot, 0) != 0
FROM (SELECT DISTINCT start_ms / {hour_ms} AS hour, coalesce(forwarded_ip_id, client_ip_id) AS ip_id, user_agent_id
      FROM request_log WHERE {where}) v
LEFT JOIN client_ips ip ON ip.id = v.ip_id
LEFT JOIN user_agents u ON u.id = v.user_agent_id
"""
_BATCH_VISITS = _VISITS.format(hour_ms=HOUR_MS, where="id BETWEEN ?1 AND ?2")
# The same for a writer's visits as ids, [hour, address id, agent id] (0 for none), in JSON.
_VISITS_OF_IDS = """
SELECT v.value ->> 0, coalesce(ip.name, ''), coalesce(u.name, ''), coalesce(u.is_bot, 0) != 0
FROM json_each(?1) v
LEFT JOIN client_ips ip ON ip.id = v.value ->> 1
LEFT JOIN user_agents u ON u.id = v.value ->> 2
"""
_ADD_VISITORS = (
    "INSERT OR IGNORE INTO rollup_visitors_hourly (hour, is_bot, visitor) "
    "SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?1)",
    "INSERT OR IGNORE INTO rollup_visitors_daily (day, is_bot, visitor) "
    "SELECT (value ->> 0) / 24, value ->> 1, value ->> 2 FROM json_each(?1)",
)

_READABLE = """
SELECT
    {time} AS {unit},
    rt.name AS route,
    p.name AS path,
    m.name AS method,
    CASE WHEN t.status_class = 0 THEN NULL ELSE t.status_class || 'xx' END AS status,
    t.is_bot,
    sum(t.hits) AS hits,
    sum(t.bytes) AS bytes,
    sum(CASE WHEN t.bucket >= 0 THEN t.hits ELSE 0 END) AS timed,
    round(sum(t.duration_us_sum) / 1000.0 / nullif(sum(CASE WHEN t.bucket >= 0 THEN t.hits END), 0), 3) AS avg_ms,
    max(t.duration_us_max) / 1000.0 AS max_ms
FROM {table} t
LEFT JOIN routes rt ON rt.id = t.route_id
LEFT JOIN paths p ON p.id = t.path_id
LEFT JOIN methods m ON m.id = t.method_id
GROUP BY t.{unit}, t.route_id, t.path_id, t.method_id, t.status_class, t.is_bot
"""


def create_tables(db: sqlite_utils.Database) -> None:
    """Create the rollup tables and their readable views (schema version 2), inside the migration."""
    counts = dict.fromkeys(KEY + VALUES, int)
    for table, unit in (("rollup_hourly", "hour"), ("rollup_daily", "day")):
        _create(db, table, {unit: int, **counts}, pk=(unit,) + KEY, not_null=(unit,) + KEY + VALUES[:3])
    for table, unit in (("rollup_visitors_hourly", "hour"), ("rollup_visitors_daily", "day")):
        _create(db, table, {unit: int, "is_bot": int, "visitor": int}, pk=(unit, "is_bot", "visitor"),
                not_null=(unit, "is_bot", "visitor"))
    # Where update() sums a batch, emptied in the same transaction. In the main database, not temp:
    # any temp table on the writer's connection makes SQLite re-prepare the writer's INSERTs at
    # every transaction (temp triggers could apply to request_log), ~14,000 instructions a row.
    _create_table(db, "rollup_batch", {"hour": int, **counts})
    db.conn.execute(db.create_table_sql("rollup_salts", {"day": int, "salt": bytes}, pk="day",
                                        not_null=["salt"], if_not_exists=True))
    db.create_view("rollup_hourly_readable", _READABLE.format(
        time="strftime('%Y-%m-%dT%H:00Z', t.hour * 3600, 'unixepoch')", unit="hour", table="rollup_hourly"),
        ignore=True)
    db.create_view("rollup_daily_readable", _READABLE.format(
        time="date(t.day * 86400, 'unixepoch')", unit="day", table="rollup_daily"), ignore=True)


def create_traffic_tables(db: sqlite_utils.Database) -> None:
    """Create the whole site's totals (schema version 3) and sum them from the detailed rollups."""
    traffic = dict.fromkeys(TRAFFIC_KEY + VALUES, int)
    for source, table, unit in (("rollup_hourly", "rollup_traffic_hourly", "hour"),
                                ("rollup_daily", "rollup_traffic_daily", "day")):
        _create(db, table, {unit: int, **traffic}, pk=(unit,) + TRAFFIC_KEY,
                not_null=(unit,) + TRAFFIC_KEY + VALUES[:3])
        db.conn.execute(traffic_from(source, table, unit))


def _create_table(db: sqlite_utils.Database, name: str, columns: dict) -> None:
    db.conn.execute(db.create_table_sql(name, columns, if_not_exists=True))


def _create(db: sqlite_utils.Database, name: str, columns: dict, pk: tuple, not_null: tuple) -> None:
    # WITHOUT ROWID: the key is the table's only B-tree, so an upsert is one seek, not two.
    sql = db.create_table_sql(name, columns, pk=pk, not_null=not_null, if_not_exists=True)
    db.conn.execute(sql.rstrip().rstrip(";") + " WITHOUT ROWID")


def traffic_from(source: str, table: str, unit: str, where: str = "true") -> str:
    """INSERT of the site's totals (rollup_traffic_hourly or _daily) summed from the detailed rollup
    table ``source`` (rollup_hourly or rollup_daily), for its rows ``where``, added to what is there."""
    return _TRAFFIC_FROM.format(table=f"main.{table}", unit=unit, columns=_TRAFFIC_COLUMNS, key=_TRAFFIC_KEY,
                                source=f"main.{source}", where=where, add=_ADD)


class RollupTally:
    """One batch's rollup groups, summed in Python while the writer shapes its rows.

    The writer has each row's values in hand as it lays the row out; adding them to a dict there
    takes under half the instructions of reading the rows back in a GROUP BY, whose sort of six
    keys a row was the writer's dearest step (docs/rollups.md, "What it costs", has the figures,
    in instructions and in CPU time). ``index`` maps each group's key, (part, hour, status class,
    bucket), to its position in four columns: ``hits``, ``sizes`` (bytes), ``sums`` and
    ``longest`` (of the durations); ``part`` is ``part_of(ids)``, kept with each combination of
    values a shaper caches. Columns rather than a list per group, which is an object the garbage
    collector tracks: thousands a batch made it sweep the whole heap more often.
    _FILL_BATCH is the plain reference it must equal (tests/test_rollups.py compares the two on
    random records).
    """

    __slots__ = ("index", "hits", "sizes", "sums", "longest", "bot_of", "first_id", "last_id", "contiguous",
                 "started", "visits")

    def __init__(self, bot_of: Callable[[int], int]):
        self.index: Dict[tuple, int] = {}
        self.hits: List[int] = []
        self.sizes: List[int] = []
        self.sums: List[int] = []
        self.longest: List[int] = []
        self.bot_of = bot_of  # user agent id -> its bot flag (0 or 1)
        # The request_log ids the sums are of, and whether they are all of first_id..last_id.
        self.first_id = 0
        self.last_id = 0
        self.contiguous = True
        self.started = time.monotonic()
        # The batch's (hour, address id, agent id) visits not tallied before: Rollups.add_visits.
        self.visits: set = set()

    def cover(self, first_id: int, last_id: int) -> None:
        """The rows summed since the last call are request_log's first_id..last_id (committed)."""
        if not self.first_id:
            self.first_id = first_id
        elif first_id != self.last_id + 1:
            self.contiguous = False  # another process's rows lie between
        self.last_id = last_id

    def due(self) -> bool:
        """Whether the sums should go to the tables now: held ROLLUP_EVERY_S, or MAX_GROUPS of them."""
        return len(self.index) >= MAX_GROUPS or time.monotonic() - self.started >= ROLLUP_EVERY_S

    def groups(self) -> Iterable[Tuple[tuple, int, int, int, int]]:
        """Each group's key, hits, bytes, duration sum and duration max, in the order they came."""
        return zip(self.index, self.hits, self.sizes, self.sums, self.longest)

    def part_of(self, ids: Sequence[int]) -> Tuple[int, int, int]:
        """(route id or minus the path id, method id, bot flag) of a row's lookup ids
        (schema.COMMON_COLUMNS order: method, path, query, agent, ..., route); 0 for none."""
        method, path, agent, route = ids[0], ids[1], ids[3], ids[9]
        return route or -path, method, self.bot_of(agent) if agent else 0

    def into_batch(self, conn: sqlite3.Connection, hand_over: Optional[Callable[[], None]] = None) -> None:
        """Write the groups into rollup_batch, as _FILL_BATCH would have; ``hand_over`` is called
        every _PER_HAND_OVER groups, as between the visitors' hashes."""
        groups = iter(self.groups())
        written = 0
        for count in statement_sizes(len(self.index)):
            if hand_over is not None and written and not written % _PER_HAND_OVER:
                hand_over()
            flat: list = []
            for ((route, method, is_bot), hour, status_class, bucket), *sums in itertools.islice(groups, count):
                flat += (int(hour), route, method, status_class, is_bot, bucket, *sums)
            conn.execute(_batch_insert(count), flat)
            written += count

    def into_site_totals(self, conn: sqlite3.Connection, hand_over: Optional[Callable[[], None]] = None) -> None:
        """Add the groups to the whole site's hourly and daily totals and to the day's sums per
        route (route_summaries.py), summed here: a few dozen rows, or a few hundred, where a
        GROUP BY over rollup_batch per table would sort all of its groups each time (2.5 times
        the instructions, in benchmarks/instructions.py's varied part)."""
        hourly: Dict[tuple, list] = {}
        daily: Dict[tuple, list] = {}
        routes: Dict[tuple, list] = {}
        latency: Dict[tuple, list] = {}
        for count, (((route, _, is_bot), hour, status_class, bucket), hits, size, total, longest) in enumerate(self.groups()):
            if hand_over is not None and count and not count % _PER_HAND_OVER:
                hand_over()
            if bucket is None:  # no duration: as _KEYED stores it
                bucket, total, longest = NO_DURATION, 0, None
            hour = int(hour)
            route_id, path_id = (route, 0) if route > 0 else (0, -route)
            timed = hits if bucket >= 0 else 0
            key = (hour // 24, route_id, path_id)
            found = routes.get(key)
            if found is None:
                routes[key] = [hits, hits * is_bot, hits if status_class == 4 else 0,
                               hits if status_class == 5 else 0, size, total, timed, longest]
            else:
                found[0] += hits
                found[1] += hits * is_bot
                if status_class == 4:
                    found[2] += hits
                elif status_class == 5:
                    found[3] += hits
                found[4] += size
                found[5] += total
                found[6] += timed
                if longest is not None and (found[7] is None or longest > found[7]):
                    found[7] = longest
            if timed:
                key = (hour // 24, route_id, path_id, bucket)
                found = latency.get(key)
                if found is None:
                    latency[key] = [hits, longest]
                else:
                    found[0] += hits
                    if longest > found[1]:
                        found[1] = longest
            for totals, unit in ((hourly, hour), (daily, hour // 24)):
                key = (unit, status_class, is_bot, bucket)
                sums = totals.get(key)
                if sums is None:
                    totals[key] = [hits, size, total, longest]
                else:
                    sums[0] += hits
                    sums[1] += size
                    sums[2] += total
                    if longest is not None and longest > sums[3]:
                        sums[3] = longest  # a timed bucket's maximum is never None
        for table, totals in (("rollup_traffic_hourly", hourly), ("rollup_traffic_daily", daily)):
            flat = [value for key, sums in totals.items() for value in (*key, *sums)]
            start = 0
            for count in statement_sizes(len(totals)):
                end = start + count * _SITE_WIDTH
                conn.execute(_site_upsert(table, count), flat[start:end])
                start = end
        route_summaries.add_sums(conn, route_summaries.ROUTES, "rollup_routes_daily", "day", routes, hand_over)
        route_summaries.add_sums(conn, route_summaries.ROUTE_LATENCY, "rollup_route_latency_daily", "day", latency,
                                 hand_over)


_SITE_WIDTH = 1 + len(TRAFFIC_KEY) + len(VALUES)


@functools.lru_cache(maxsize=16)
def _site_upsert(table: str, rows: int) -> str:
    unit = "hour" if table.endswith("hourly") else "day"
    row = "(" + ", ".join("?" * _SITE_WIDTH) + ")"
    return (f"INSERT INTO {table} ({unit}, {_TRAFFIC_COLUMNS}) VALUES {', '.join([row] * rows)} "
            f"ON CONFLICT ({unit}, {_TRAFFIC_KEY}) DO UPDATE SET {_ADD}")


_BATCH_COLUMNS = ("hour", "route_id", "method_id", "status_class", "is_bot", "bucket") + VALUES
_BATCH_WIDTH = len(_BATCH_COLUMNS)


@functools.lru_cache(maxsize=8)
def _batch_insert(rows: int) -> str:
    row = "(" + ", ".join("?" * _BATCH_WIDTH) + ")"
    return f"INSERT INTO rollup_batch ({', '.join(_BATCH_COLUMNS)}) VALUES " + ", ".join([row] * rows)


def add_rows(conn: sqlite3.Connection, first_id: int, last_id: int) -> None:
    """Add request_log rows first_id..last_id to the rollups from the raw rows, in the caller's
    transaction: the plain reference that a writer's tally must equal (tests/test_rollups.py)."""
    ensure_math(conn)
    conn.execute(_FILL_BATCH, (first_id, last_id))
    _add_batch(conn)


def _add_batch(conn: sqlite3.Connection, tally: Optional[RollupTally] = None,
               hand_over: Optional[Callable[[], None]] = None) -> None:
    """Add rollup_batch's groups (summed from ``tally`` when given) to the tables, and empty it."""
    conn.execute(_TO_HOURLY)
    conn.execute(_TO_DAILY)
    if tally is not None:
        tally.into_site_totals(conn, hand_over)
    else:
        add_site_totals(conn)
        route_summaries.add_keyed(conn, _BATCH_KEYED)
    # Emptied before the COMMIT: readers and the next batch find it empty.
    conn.execute("DELETE FROM rollup_batch")


def add_site_totals(conn: sqlite3.Connection) -> None:
    """Add rollup_batch's groups to the site's totals per hour and per day, in the caller's transaction."""
    conn.execute(_TRAFFIC_BATCH)
    conn.execute(_FILL_TRAFFIC_BATCH)
    conn.execute(_TO_TRAFFIC_HOURLY)
    conn.execute(_TO_TRAFFIC_DAILY)
    conn.execute("DELETE FROM temp.rollup_traffic_batch")


WATERMARK = Watermark(META_KEY, "rollup_hourly", add_rows)


class StuckCatchUp:
    """When retention sums the rows above the rollups' mark from the raw rows: once the mark has not
    moved for STUCK_S while rows wait above it, their writer having stopped before it added its sums.
    A live writer moves the mark itself every ROLLUP_EVERY_S or so; summing its rows here would
    only spend its sums."""

    def __init__(self) -> None:
        self._seen: Optional[int] = None
        self._since = time.monotonic()

    def run(self, conn: sqlite3.Connection, deadline: float) -> bool:
        """Catch up if the mark is stuck, until ``deadline``; True when there is nothing more to do now."""
        if not WATERMARK.has_tables(conn):
            return True
        mark, now = WATERMARK.marked(conn), time.monotonic()
        if mark != self._seen:
            self._seen, self._since = mark, now
            return True
        if now - self._since < STUCK_S or not WATERMARK.behind(conn):
            return True
        done = WATERMARK.catch_up(conn, deadline)
        self._seen, self._since = WATERMARK.marked(conn), now
        return done


def create_watermark(db: sqlite_utils.Database) -> None:
    """The rollups' mark (schema version 5), at the newest row: until then they were kept per batch."""
    db.conn.execute("INSERT OR IGNORE INTO log_meta (key, value) SELECT ?, coalesce(max(id), 0) FROM request_log",
                    (META_KEY,))


def bucket_of(duration_us: Optional[int]) -> int:
    """The latency bucket of an integer duration in microseconds, as the rollup SQL computes it."""
    if duration_us is None or duration_us < 0:
        return NO_DURATION
    return int(BUCKETS_PER_OCTAVE * math.log2(duration_us + 1))


def bucket_value(bucket: int) -> float:
    """The duration (microseconds) a bucket stands for: d where d + 1 is the bucket's geometric middle."""
    return 2 ** ((bucket + 0.5) / BUCKETS_PER_OCTAVE) - 1


def percentiles(conn: sqlite3.Connection, since_ms: Optional[int] = None, until_ms: Optional[int] = None,
                quantiles: Sequence[float] = (0.5, 0.95, 0.99), *, is_bot: Optional[bool] = None
                ) -> Dict[float, Optional[float]]:
    """Latency quantiles in microseconds over the hours that overlap [since_ms, until_ms), from rollup_hourly.

    Each value is the middle of the bucket holding that rank (nearest-rank definition), capped at
    the largest duration seen in it: within 4.4% of the exact value plus 1 µs. None where no row
    had a duration. ``is_bot``: only bots (True) or only the others (False).
    """
    where, params = ["bucket >= 0"], []
    if since_ms is not None:
        where.append("hour >= ?")
        params.append(int(since_ms) // HOUR_MS)
    if until_ms is not None:
        where.append("hour <= ?")
        params.append((int(until_ms) - 1) // HOUR_MS)
    if is_bot is not None:
        where.append("is_bot = ?")
        params.append(int(bool(is_bot)))
    rows = conn.execute(f"SELECT bucket, sum(hits), max(duration_us_max) FROM rollup_hourly "
                        f"WHERE {' AND '.join(where)} GROUP BY bucket ORDER BY bucket", params).fetchall()
    total = sum(hits for _, hits, _ in rows)
    found: Dict[float, Optional[float]] = {}
    for q in quantiles:
        if not 0 < q <= 1:
            raise ValueError(f"quantile {q!r}: expected a fraction in (0, 1], for example 0.95")
        found[q] = None
        rank, seen = max(1, math.ceil(q * total - 1e-9)), 0
        for bucket, hits, top in rows:
            seen += hits
            if seen >= rank:
                found[q] = float(min(bucket_value(bucket), top) if top is not None else bucket_value(bucket))
                break
    return found


class Rollups:
    """Keeps the rollups of one log file; ``update`` runs on the writer thread, in its transaction.

    ``clock`` gives the time (seconds since the epoch) that decides which days' salts are over.
    ``visitors_of_closed_days``: for an import of old logs, a day that is over gets a salt held in
    this object's memory only, never written to the file, so the import counts its visitors; by
    default rows of a day whose salt is gone add no visitors. ``hand_over``, when given, is called
    every _PER_HAND_OVER visits hashed, so that the writer thread never keeps the GIL for long.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, visitors_of_closed_days: bool = False,
                 hand_over: Optional[Callable[[], None]] = None):
        self.clock = clock
        self.hand_over = hand_over
        self.visitors_of_closed_days = visitors_of_closed_days
        self._hashes: Dict[int, Tuple[bytes, Dict[Tuple[str, str], int]]] = {}  # day -> (salt, texts -> hash)
        self._memory_salts: Dict[int, bytes] = {}

    def update(self, conn: sqlite3.Connection, first_id: int, last_id: int) -> None:
        """Rows first_id..last_id were just inserted in the caller's transaction (an import's chunk,
        merge's copies): add their visitors, and sum every row above the mark from the raw rows."""
        self.add_visitors_of(conn, first_id, last_id)
        WATERMARK.catch_up_slice(conn, None)

    def add_tally(self, conn: sqlite3.Connection, tally: RollupTally) -> bool:
        """Add a writer's sums to the tables and move the mark over their rows, in the caller's
        transaction, which holds the write lock; True when it could.

        It can when the rows above the mark are exactly the tally's. Otherwise (another process's
        rows among them, a tally begun before a rolled-back batch, or rows summed already) rows above
        the mark are summed from the raw rows instead, and the tally is spent: twice as many as the
        tally covers, at least SLICE_ROWS, so that writers whose tallies keep missing (several
        processes on one file) still move the mark faster than they write.
        """
        mark = WATERMARK.marked(conn)
        newest = conn.execute("SELECT max(id) FROM request_log").fetchone()[0] or 0
        if tally.contiguous and tally.first_id == mark + 1 and tally.last_id == newest:
            tally.into_batch(conn, self.hand_over)
            _add_batch(conn, tally, self.hand_over)
            WATERMARK.set_mark(conn, newest)
            return True
        covered = tally.last_id - tally.first_id + 1 if tally.first_id else 0
        WATERMARK.catch_up_slice(conn, max(SLICE_ROWS, 2 * covered))
        return False

    def add_visits(self, conn: sqlite3.Connection, visits: set) -> None:
        """Add a writer's batch of (hour, address id, agent id) visits to the visitor sets.

        The writer tallies a combination of values' visit once an hour, so a batch has few:
        looking their names up costs less than a SELECT DISTINCT over the batch's rows.
        """
        hours = [hour for hour, _, _ in visits]
        if self._counts_visitors(conn, int(min(hours)) if hours else None, int(max(hours)) if hours else None):
            text = json.dumps([[int(hour), address, agent] for hour, address, agent in visits])
            self.add_visitors(conn, conn.execute(_VISITS_OF_IDS, (text,)).fetchall())

    def add_visitors_of(self, conn: sqlite3.Connection, first_id: int, last_id: int) -> None:
        """Add the visitors of request_log rows first_id..last_id to the visitor sets."""
        first_hour, last_hour = conn.execute(
            f"SELECT min(start_ms) / {HOUR_MS}, max(start_ms) / {HOUR_MS} FROM request_log WHERE id BETWEEN ?1 AND ?2",
            (first_id, last_id)).fetchone()
        if self._counts_visitors(conn, first_hour, last_hour):
            self.add_visitors(conn, conn.execute(_BATCH_VISITS, (first_id, last_id)).fetchall())

    def _counts_visitors(self, conn: sqlite3.Connection, first_hour: Optional[int], last_hour: Optional[int]) -> bool:
        """Whether a batch of hours first_hour..last_hour can add visitors; expires the salts either way.

        An import of days whose salts are gone skips the visitors' SELECT DISTINCT (1,500
        instructions a row) that would find nothing to hash.
        """
        self.expire_salts(conn)
        if first_hour is None or self.visitors_of_closed_days or self._open(last_hour // 24):
            return first_hour is not None
        return conn.execute("SELECT 1 FROM rollup_salts WHERE day BETWEEN ? AND ? LIMIT 1",
                            (first_hour // 24, last_hour // 24)).fetchone() is not None

    # ---- visitors ------------------------------------------------------------------------------
    def add_visitors(self, conn: sqlite3.Connection, visits: Iterable[Tuple[int, str, str, int]]) -> int:
        """Add (hour, address, agent, is_bot) visits to the visitor sets; returns how many were hashed in."""
        self.expire_salts(conn)
        found: List[Tuple[int, int, int]] = []
        salts: Dict[int, Tuple[Optional[bytes], Dict[Tuple[str, str], int]]] = {}
        hand_over = self.hand_over
        for count, (hour, address, agent, is_bot) in enumerate(visits, 1):
            if hand_over is not None and not count % _PER_HAND_OVER:
                hand_over()
            day = hour // 24
            salted = salts.get(day)
            if salted is None:
                salted = salts[day] = self._salted(conn, day)
            salt, cache = salted
            if salt is None:
                continue
            visitor = cache.get((address, agent))
            if visitor is None:
                if len(cache) >= _HASH_CACHE_LIMIT:
                    cache.clear()
                visitor = cache[(address, agent)] = visitor_hash(salt, address, agent)
            found.append((hour, is_bot, visitor))
        if found:
            text = json.dumps(found)
            for sql in _ADD_VISITORS:
                conn.execute(sql, (text,))
        return len(found)

    def _salted(self, conn: sqlite3.Connection, day: int) -> Tuple[Optional[bytes], Dict[Tuple[str, str], int]]:
        """(salt, hash cache) of ``day``: the file's salt, made if the day is still open; None when gone."""
        salt = salt_of(conn, day, create=self._open(day))
        if salt is None and self.visitors_of_closed_days:
            salt = self._memory_salts.setdefault(day, secrets.token_bytes(16))
        if salt is None:
            return None, {}
        held = self._hashes.get(day)
        if held is None or held[0] != salt:
            # Another process made the day's salt, or our transaction that made one rolled back.
            held = self._hashes[day] = (salt, {})
            for old in [d for d in self._hashes if d < day - 1]:
                del self._hashes[old]
        return held

    def _open(self, day: int) -> bool:
        """Whether ``day`` (days since the epoch, UTC) still takes a salt: not over, grace included."""
        return (day + 1) * DAY_S + SALT_GRACE_S > self.clock()

    def expire_salts(self, conn: sqlite3.Connection) -> int:
        """Delete the salts of days that are over (SALT_GRACE_S after midnight UTC); returns how many.

        Every batch: a rolled-back batch takes its deletion with it, so none is skipped as done.
        """
        before = int((self.clock() - SALT_GRACE_S) // DAY_S)
        # Overwritten first: a deleted row's bytes stay in its page until the page is reused.
        conn.execute("UPDATE rollup_salts SET salt = zeroblob(length(salt)) WHERE day < ?", (before,))
        return conn.execute("DELETE FROM rollup_salts WHERE day < ?", (before,)).rowcount

    # ---- rebuild -------------------------------------------------------------------------------
    def rebuild(self, conn: sqlite3.Connection, progress: Optional[Callable[[int, int], None]] = None
                ) -> List[Dict[str, object]]:
        """Recompute, from request_log, the rollups of every hour whose raw rows are all still there.

        An hour with no raw rows (pruned) keeps its rollups, and so does one with fewer raw rows
        than it counts (partly pruned); a day's totals are its kept hours plus its rebuilt ones.
        Visitors are rebuilt only for days whose salt still exists (today's, usually): the others'
        hashes cannot be made again. One transaction on ``conn``, which must have none open.
        ``progress(rows read, rows in all)`` is called as it goes. Returns one dict per day rebuilt.
        """
        if conn.in_transaction:
            raise ValueError("rebuild needs a connection with no transaction open; commit or roll back first")
        ensure_math(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Every row counted first, so that an hour kept as it is (partly pruned) lacks none.
            WATERMARK.catch_up_slice(conn, None)
            summary = self._rebuild(conn, progress)
            for table in ("rebuild_hourly", "rebuild_hours", "rebuild_daily"):
                conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return summary

    def _rebuild(self, conn: sqlite3.Connection, progress) -> List[Dict[str, object]]:
        low, high, total = conn.execute("SELECT min(id), max(id), count(*) FROM request_log").fetchone()
        conn.execute("DROP TABLE IF EXISTS temp.rebuild_hourly")
        conn.execute(f"CREATE TEMP TABLE rebuild_hourly (hour, {_COLUMNS}, PRIMARY KEY (hour, {_KEY})) WITHOUT ROWID")
        done = 0
        for start in range(low or 0, (high or -1) + 1, _REBUILD_CHUNK):
            end = min(start + _REBUILD_CHUNK - 1, high)
            # The writer's own two steps, so that a rebuilt hour is what the writer would have made.
            conn.execute(_FILL_BATCH, (start, end))
            conn.execute(f"INSERT INTO temp.rebuild_hourly (hour, {_COLUMNS}) {_KEYED.format(unit='hour')} "
                         f"ON CONFLICT (hour, {_KEY}) DO UPDATE SET {_ADD}")
            conn.execute("DELETE FROM rollup_batch")
            done += conn.execute("SELECT count(*) FROM request_log WHERE id BETWEEN ? AND ?", (start, end)).fetchone()[0]
            if progress is not None:
                progress(done, total)
        # Each hour raw rows cover: how many rows it has, and how many its rollups count.
        conn.execute("DROP TABLE IF EXISTS temp.rebuild_hours")
        conn.execute("CREATE TEMP TABLE rebuild_hours (hour INTEGER PRIMARY KEY, raw INTEGER, kept INTEGER, "
                     "covered INTEGER)")
        conn.execute("INSERT INTO temp.rebuild_hours (hour, raw, kept) SELECT n.hour, n.hits, (SELECT coalesce(sum(h.hits), 0) "
                     "FROM rollup_hourly h WHERE h.hour = n.hour) FROM (SELECT hour, sum(hits) AS hits "
                     "FROM temp.rebuild_hourly GROUP BY hour) n")
        conn.execute(_MARK_COVERED)
        conn.execute("DROP TABLE IF EXISTS temp.rebuild_daily")
        conn.execute(_REBUILT_DAILY)
        conn.execute(f"DELETE FROM rollup_daily WHERE day IN (SELECT hour / 24 FROM {_COVERED})")
        conn.execute(f"INSERT INTO rollup_daily (day, {_COLUMNS}) SELECT day, {_COLUMNS} FROM temp.rebuild_daily")
        conn.execute(f"DELETE FROM rollup_hourly WHERE hour IN (SELECT hour FROM {_COVERED})")
        conn.execute(f"INSERT INTO rollup_hourly (hour, {_COLUMNS}) SELECT hour, {_COLUMNS} FROM temp.rebuild_hourly "
                     f"WHERE hour IN (SELECT hour FROM {_COVERED})")
        # The site's totals are sums of the detailed rows: the rebuilt hours' and days' again.
        conn.execute(f"DELETE FROM rollup_traffic_hourly WHERE hour IN (SELECT hour FROM {_COVERED})")
        conn.execute(traffic_from("rollup_hourly", "rollup_traffic_hourly", "hour", f"hour IN (SELECT hour FROM {_COVERED})"))
        conn.execute(f"DELETE FROM rollup_traffic_daily WHERE day IN (SELECT hour / 24 FROM {_COVERED})")
        conn.execute(traffic_from("rollup_daily", "rollup_traffic_daily", "day",
                                  f"day IN (SELECT hour / 24 FROM {_COVERED})"))
        route_summaries.replace_from_detailed(conn, _COVERED)
        self.expire_salts(conn)
        salted = {day for (day,) in conn.execute(
            f"SELECT day FROM rollup_salts WHERE day IN (SELECT hour / 24 FROM {_COVERED})")}
        for day in sorted(salted):
            self._rebuild_visitors(conn, day)
        summary = []
        for day, rebuilt, partly, rows, without in conn.execute(_REBUILD_SUMMARY):
            summary.append({"day": day_text(day), "hours_rebuilt": rebuilt, "hours_partly_pruned": partly,
                            "hours_without_rows": without, "rows": rows,
                            "visitors": "rebuilt" if day in salted else "kept (salt deleted)" if rebuilt else "kept"})
        return summary

    def _rebuild_visitors(self, conn: sqlite3.Connection, day: int) -> None:
        """The visitor sets of one day whose salt still exists, from its covered hours' raw rows."""
        conn.execute(f"DELETE FROM rollup_visitors_hourly WHERE hour IN (SELECT hour FROM {_COVERED} "
                     f"WHERE hour / 24 = ?)", (day,))
        where = (f"start_ms >= ?1 AND start_ms < ?2 AND start_ms / {HOUR_MS} IN "
                 f"(SELECT hour FROM {_COVERED})")
        visits = conn.execute(_VISITS.format(hour_ms=HOUR_MS, where=where), (day * DAY_S * 1000, (day + 1) * DAY_S * 1000))
        self.add_visitors(conn, visits.fetchall())
        conn.execute("DELETE FROM rollup_visitors_daily WHERE day = ?", (day,))
        conn.execute("INSERT INTO rollup_visitors_daily (day, is_bot, visitor) SELECT DISTINCT hour / 24, is_bot, "
                     "visitor FROM rollup_visitors_hourly WHERE hour >= ?1 * 24 AND hour < ?1 * 24 + 24", (day,))


# Raw rows aggregated per rebuild statement: each is one step of the progress bar.
_REBUILD_CHUNK = 50_000
# The hours a rebuild replaces: every raw row they counted is still there.
_COVERED = "(SELECT hour FROM temp.rebuild_hours WHERE covered)"
# An hour is covered when its raw rows are as many as its rollups count, or more (rows written
# without rollups). An hour whose rollup rows are all gone is covered only if its day lost none:
# past the size budget the hourly rows go before the daily ones, and a daily row that still counts
# the hour's rows must not have them added again.
_MARK_COVERED = f"""
UPDATE temp.rebuild_hours SET covered = raw >= kept AND (kept > 0 OR hour / 24 NOT IN (
    SELECT d.day FROM (SELECT DISTINCT hour / 24 AS day FROM temp.rebuild_hours WHERE kept = 0) d
    WHERE (SELECT coalesce(sum(hits), 0) FROM main.rollup_daily WHERE day = d.day)
        > (SELECT coalesce(sum(hits), 0) FROM main.rollup_hourly WHERE hour >= d.day * 24 AND hour < d.day * 24 + 24)))"""
_ON_KEY = " AND ".join(f"o.{column} = d.{column}" for column in ("day",) + KEY)
# A day's rollups after a rebuild: what its kept hours had added (the old daily row minus the old
# hourly rows of the rebuilt hours), plus its rebuilt hours. max cannot be taken back: a day with
# kept hours keeps its old max, which is still its true max unless rows moved between keys.
_REBUILT_DAILY = f"""
CREATE TEMP TABLE rebuild_daily AS
WITH old AS (
    SELECT hour / 24 AS day, {_KEY}, sum(hits) AS hits, sum(bytes) AS bytes, sum(duration_us_sum) AS duration_us_sum
    FROM rollup_hourly WHERE hour IN {_COVERED} GROUP BY 1, 2, 3, 4, 5, 6, 7
), residual AS (
    SELECT d.day, {", ".join("d." + column for column in KEY)}, d.hits - coalesce(o.hits, 0) AS hits,
           d.bytes - coalesce(o.bytes, 0) AS bytes, d.duration_us_sum - coalesce(o.duration_us_sum, 0) AS duration_us_sum,
           d.duration_us_max
    FROM rollup_daily d LEFT JOIN old o ON {_ON_KEY}
    WHERE d.day IN (SELECT hour / 24 FROM {_COVERED})
), fresh AS (
    SELECT hour / 24 AS day, {_COLUMNS} FROM temp.rebuild_hourly WHERE hour IN {_COVERED}
)
SELECT day, {_KEY}, sum(hits) AS hits, sum(bytes) AS bytes, sum(duration_us_sum) AS duration_us_sum,
       max(duration_us_max) AS duration_us_max
FROM (SELECT * FROM residual WHERE hits > 0 UNION ALL SELECT * FROM fresh)
GROUP BY day, {_KEY}
"""
_REBUILD_SUMMARY = f"""
SELECT n.day, n.rebuilt, n.partly, n.rows,
       (SELECT count(DISTINCT h.hour) FROM rollup_hourly h WHERE h.hour >= n.day * 24 AND h.hour < n.day * 24 + 24
        AND h.hour NOT IN (SELECT hour FROM temp.rebuild_hours))
FROM (SELECT hour / 24 AS day, sum(covered) AS rebuilt, sum(NOT covered) AS partly,
             sum(CASE WHEN covered THEN raw ELSE 0 END) AS rows
      FROM temp.rebuild_hours GROUP BY 1) n
ORDER BY n.day
"""


# ---- merge ---------------------------------------------------------------------------------------
def merge_from(conn: sqlite3.Connection, schema: str, id_maps: Dict[str, str]) -> Dict[str, int]:
    """Add the rollups of the ATTACHed database ``schema`` to main's, inside the caller's transaction.

    ``id_maps`` names, for each lookup table in REFERENCES, a table of (old_id, new_id) rows that
    maps ``schema``'s ids to main's, for example ``{"paths": "temp.map_paths", ...}``. Counts add
    up; visitor sets are merged as unions (the same visitor counts once where both files used the
    same salt); salts of days not over are copied where main has none. Returns rows merged per table.
    """
    source = _identifier(schema, "schema")
    if not conn.execute(f"SELECT 1 FROM {source}.sqlite_master WHERE name = 'rollup_hourly'").fetchone():
        return {}
    maps = {}
    for lookup in REFERENCES:
        if lookup not in id_maps:
            raise ValueError(f"id_maps has no {lookup!r}: expected a table of (old_id, new_id) for each of "
                             f"{', '.join(REFERENCES)}, for example {{'{lookup}': 'temp.map_{lookup}'}}")
        maps[lookup] = _identifier(id_maps[lookup], f"id_maps[{lookup!r}]")
    merged = {}
    # The source's per-route sums as they are, like its site totals below, remapped like its detail.
    detail = [(table, unit, _KEY, KEY + VALUES, _ADD) for table, unit in (("rollup_hourly", "hour"), ("rollup_daily", "day"))]
    detail += [(table, unit, ", ".join(summary.key), summary.columns, summary.adding())
               for summary in route_summaries.SUMMARIES for table, unit in summary.tables()]
    for table, unit, key, columns, add in detail:
        joins, mapped = [], {}
        for lookup, pairs in REFERENCES.items():
            column = dict(pairs).get(table)
            if column is None:
                continue
            missing = conn.execute(f"SELECT count(*) FROM {source}.{table} s WHERE s.{column} != 0 AND NOT EXISTS "
                                   f"(SELECT 1 FROM {maps[lookup]} m WHERE m.old_id = s.{column})").fetchone()[0]
            if missing:
                raise ValueError(f"{schema}.{table}: {missing} row(s) have a {column} that {id_maps[lookup]} does not "
                                 f"map; expected an (old_id, new_id) row for every id of {schema}.{lookup}")
            joins.append(f"LEFT JOIN {maps[lookup]} m_{column} ON m_{column}.old_id = s.{column}")
            mapped[column] = f"CASE WHEN s.{column} = 0 THEN 0 ELSE m_{column}.new_id END"
        select = ", ".join(mapped.get(column, f"s.{column}") for column in (unit,) + columns)
        merged[table] = conn.execute(
            f"INSERT INTO main.{table} ({unit}, {', '.join(columns)}) SELECT {select} FROM {source}.{table} s "
            f"{' '.join(joins)} WHERE true ON CONFLICT ({unit}, {key}) DO UPDATE SET {add}").rowcount
    # The source's own totals, not its detailed rows summed: past its size budget retention deletes
    # the detailed rows of old hours first, and their totals stay.
    for table, unit in (("rollup_traffic_hourly", "hour"), ("rollup_traffic_daily", "day")):
        merged[table] = conn.execute(
            f"INSERT INTO main.{table} ({unit}, {_TRAFFIC_COLUMNS}) SELECT {unit}, {_TRAFFIC_COLUMNS} "
            f"FROM {source}.{table} WHERE true ON CONFLICT ({unit}, {_TRAFFIC_KEY}) DO UPDATE SET {_ADD}").rowcount
    for table, unit in (("rollup_visitors_hourly", "hour"), ("rollup_visitors_daily", "day")):
        merged[table] = conn.execute(f"INSERT OR IGNORE INTO main.{table} ({unit}, is_bot, visitor) "
                                     f"SELECT {unit}, is_bot, visitor FROM {source}.{table}").rowcount
    merged["rollup_salts"] = conn.execute(
        f"INSERT OR IGNORE INTO main.rollup_salts (day, salt) SELECT day, salt FROM {source}.rollup_salts "
        f"WHERE day >= ?", (int((time.time() - SALT_GRACE_S) // DAY_S),)).rowcount
    return merged


def _identifier(name: str, what: str) -> str:
    """``name`` (a schema, or schema.table) quoted for SQL; ValueError quoting it when it is not a plain name."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", name):
        raise ValueError(f"{what}={name!r}: expected a plain name like 'src' or 'temp.map_paths'")
    return ".".join(f"[{part}]" for part in name.split("."))


# ---- salts and hashes ----------------------------------------------------------------------------
def salt_of(conn: sqlite3.Connection, day: int, *, create: bool) -> Optional[bytes]:
    """The salt of ``day`` (days since the epoch, UTC) in this file, made first when ``create``.

    INSERT OR IGNORE then SELECT: every process on one file ends up with the first one made.
    """
    row = conn.execute("SELECT salt FROM rollup_salts WHERE day = ?", (day,)).fetchone()
    if row is None and create:
        conn.execute("INSERT OR IGNORE INTO rollup_salts (day, salt) VALUES (?, randomblob(16))", (day,))
        row = conn.execute("SELECT salt FROM rollup_salts WHERE day = ?", (day,)).fetchone()
    return None if row is None else bytes(row[0])


def visitor_hash(salt: bytes, address: str, agent: str) -> int:
    """A visitor's 64-bit hash: keyed BLAKE2b of the truncated address and the agent text."""
    text = f"{address}\n{agent}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, key=salt, digest_size=8).digest(), "big", signed=True)


def ensure_math(conn: sqlite3.Connection) -> None:
    """Give ``conn`` a log2() when its SQLite was built without math functions (a slower Python one)."""
    try:
        conn.execute("SELECT log2(2)").fetchone()
    except sqlite3.OperationalError:
        conn.create_function("log2", 1, _log2, deterministic=True)


def _log2(value):
    return math.log2(value) if isinstance(value, (int, float)) and value > 0 else None


def day_text(day: int) -> str:
    """A day number (days since the epoch, UTC) as 2024-05-01."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S))
