"""The log's ready-made queries: SQL text, titles and descriptions, nothing that needs Datasette.

Every query takes ``start`` and ``end`` and most take ``path_prefix``, all as text, as Datasette
passes them; an empty string is the default (the 7 days up to now; no prefix). docs/queries.md
has the range rules, which query reads what, and their timings on a 10,000,000-row log.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ..toplists import TAIL

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
DEFAULT_SPAN_MS = 7 * DAY_MS
LAST_REQUESTS = 100
SLOWEST_MIN_SHARE = 0.001  # slowest_routes ranks the routes with at least this share of the timed requests

# julianday() also reads a bare number as a Julian day ('5' is 4713 BC): only text that starts
# like an ISO date is taken as a time, anything else makes the range NULL, so no row matches.
_ISO = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"


def _ms(julian: str) -> str:
    """SQL for milliseconds since the Unix epoch from a julianday() expression."""
    return f"CAST(round(({julian} - 2440587.5) * 86400000) AS INTEGER)"


def _range(prefix: bool) -> str:
    """The CTEs every query starts with: the parameters read once, the range in ms, hours and days.

    ``range`` has one row: start_ms (inclusive), end_ms (exclusive), the hours and days that
    overlap them (first_hour .. end_hour exclusive, first_day .. end_day exclusive), and the
    whole days inside the hours (full_from .. full_until) that the daily rollups answer.
    """
    prefix_sql = "coalesce(:path_prefix, '')" if prefix else "''"
    return f"""
input AS (
    SELECT trim(coalesce(:start, '')) AS start_text, trim(coalesce(:end, '')) AS end_text, {prefix_sql} AS prefix
),
ends AS (
    SELECT start_text, prefix, CASE
        WHEN end_text = '' THEN {_ms("julianday('now')")}
        WHEN end_text NOT GLOB '{_ISO}' THEN NULL
        WHEN length(end_text) = 10 THEN {_ms("julianday(end_text, '+1 day')")}
        ELSE {_ms("julianday(end_text)")} END AS end_ms
    FROM input
),
bounds AS (
    SELECT prefix, end_ms, CASE
        WHEN start_text = '' THEN end_ms - {DEFAULT_SPAN_MS}
        WHEN start_text NOT GLOB '{_ISO}' THEN NULL
        ELSE {_ms("julianday(start_text)")} END AS start_ms
    FROM ends
),
hours AS (
    SELECT prefix, start_ms, end_ms, start_ms / {HOUR_MS} AS first_hour, (end_ms + {HOUR_MS - 1}) / {HOUR_MS} AS end_hour,
           start_ms / {DAY_MS} AS first_day, (end_ms + {DAY_MS - 1}) / {DAY_MS} AS end_day
    FROM bounds
),
range AS (
    SELECT *, max(end_hour / 24, full_from) AS full_until
    FROM (SELECT *, (first_hour + 23) / 24 AS full_from FROM hours)
),
wanted_routes AS (
    SELECT routes.id FROM routes, range WHERE range.prefix != '' AND substr(routes.name, 1, length(range.prefix)) = range.prefix
),
wanted_paths AS (
    SELECT paths.id FROM paths, range WHERE range.prefix != '' AND substr(paths.name, 1, length(range.prefix)) = range.prefix
)"""


# The range's hours (or days) as FROM clauses: from the site's totals (rollup_traffic_hourly and
# _daily, about a tenth of the rows) when path_prefix is blank, else from the detailed rollups,
# those of the prefix's routes and paths. A query reads both, UNION ALL: the prefix test is on the
# bound parameter itself, a constant, so SQLite evaluates it once before the branch's loop and the
# other branch reads no row (a test on range's prefix, a subquery, is evaluated per row read: on
# SQLite 3.40 that made the unused branch cost as much as reading it, 30 days' summary 156 ms, not 18).
# Written into the aggregate itself, since a CTE here would be copied into a temporary table
# (3,000,000 rows for 30 days of a 10,000,000-row log) before the GROUP BY, which the key's order
# serves as it is. The bounds are scalar subqueries, constants to SQLite: a join to range would
# hide that the rows come in the key's order, and the GROUP BY would sort them again.
_BLANK_PREFIX = "coalesce(:path_prefix, '') = ''"
_PREFIX_KEYS = ("coalesce(:path_prefix, '') != '' AND (t.route_id IN (SELECT id FROM wanted_routes) "
                "OR t.path_id IN (SELECT id FROM wanted_paths))")
# For the queries that need routes or paths whatever the prefix: a blank one matches every key.
_ANY_PREFIX = ("((SELECT prefix FROM range) = '' OR t.route_id IN (SELECT id FROM wanted_routes) "
               "OR t.path_id IN (SELECT id FROM wanted_paths))")
_SITE_TABLES = {"rollup_hourly": "rollup_traffic_hourly", "rollup_daily": "rollup_traffic_daily"}


def _site_or_keyed(columns: str, table: str, unit: str, low: str, high: str, where: str = "true",
                   group: Optional[str] = None, site_group: Optional[str] = None) -> str:
    """``columns`` of ``table``'s units from ``low`` to ``high``: the site's totals, or the prefix's keys.

    Two SELECTs, UNION ALL, of which only one reads rows: ``columns`` and ``where`` must name only
    what both tables have (the unit, status_class, is_bot, bucket and the values). Each branch is
    summed per unit when its ``group`` (detailed) or ``site_group`` is a string, per unit and those
    columns when it is not empty: a prefix of its table's key, so that it sums rows as it reads them.
    """
    arms = []
    for source, prefix, extra in ((_SITE_TABLES[table], _BLANK_PREFIX, site_group), (table, _PREFIX_KEYS, group)):
        grouped = "" if extra is None else f" GROUP BY t.{unit}" + (f", {extra}" if extra else "")
        arms.append(f"SELECT {columns} FROM {source} t WHERE t.{unit} >= {low} AND t.{unit} < {high} "
                    f"AND {prefix} AND {where}{grouped}")
    return "\n    UNION ALL\n    ".join(arms)


def _hourly(columns: str, where: str = "true", group: str = "") -> str:
    """The range's hours, ``columns`` summed per hour (and ``group``), site-wide or for the prefix."""
    return _site_or_keyed(columns, "rollup_hourly", "hour", "(SELECT first_hour FROM range)",
                          "(SELECT end_hour FROM range)", where, group, group)


def _daily(columns: str, where: str = "true", group: Optional[str] = "") -> str:
    """The days the range touches, ``columns`` summed per day (and ``group``), site-wide or for the prefix."""
    return _site_or_keyed(columns, "rollup_daily", "day", "(SELECT first_day FROM range)",
                          "(SELECT end_day FROM range)", where, group, group)



# The range's hours as three parts: its whole days from rollup_daily (fewer rows than their hours),
# and the hours before the first whole day and after the last from rollup_hourly.
_PARTS = (
    ("rollup_daily", "day", "(SELECT full_from FROM range)", "(SELECT full_until FROM range)"),
    ("rollup_hourly", "hour", "(SELECT first_hour FROM range)", "(SELECT min(end_hour, full_from * 24) FROM range)"),
    ("rollup_hourly", "hour", "(SELECT max(first_hour, full_until * 24) FROM range)", "(SELECT end_hour FROM range)"),
)


# What each part of per_key gives per unit and route: from a row of rollup_routes_daily for the
# range's whole days, summed from rollup_hourly's rows (alias t for both) for its other hours.
_PER_ROUTE = {
    "hits": ("t.hits", "sum(t.hits)"),
    "bots": ("t.bots", "sum(t.hits * (t.is_bot != 0))"),
    "client_errors": ("t.client_errors", "sum(t.hits * (t.status_class = 4))"),
    "server_errors": ("t.server_errors", "sum(t.hits * (t.status_class = 5))"),
    "bytes": ("t.bytes", "sum(t.bytes)"),
    "duration_us_sum": ("t.duration_us_sum", "sum(t.duration_us_sum)"),
    "timed": ("t.timed", "sum(t.hits * (t.bucket >= 0))"),
    "duration_us_max": ("t.duration_us_max", "max(t.duration_us_max)"),
}


def _per_route_rows(values) -> str:
    """The range's ``values`` (of _PER_ROUTE) per unit and route (or path), its three parts UNION ALL.

    Whole days come from rollup_routes_daily (route_summaries.py), one row per day and route where
    rollup_daily has dozens; the hours at either end from rollup_hourly, summed as SQLite reads them
    in its key's order. No hourly table of sums: for an imported log, with a row per path and hour,
    it would be nearly as large as rollup_hourly and cost the import another tenth of its speed.
    """
    parts = []
    for table, unit, low, high in _PARTS:
        if unit == "day":
            listed = ", ".join(f"{_PER_ROUTE[value][0]} AS {value}" for value in values)
            source, grouped = "rollup_routes_daily", ""
        else:
            listed = ", ".join(f"{_PER_ROUTE[value][1]} AS {value}" for value in values)
            source, grouped = table, f" GROUP BY t.{unit}, t.route_id, t.path_id"
        parts.append(f"SELECT t.route_id, t.path_id, {listed} FROM {source} t "
                     f"WHERE t.{unit} >= {low} AND t.{unit} < {high} AND {_ANY_PREFIX}{grouped}")
    return "\n    UNION ALL\n    ".join(parts)


def _site_rolled(columns: str, where: str = "true", group: Optional[str] = None,
                 site_group: Optional[str] = None) -> str:
    """The range's three parts (_PARTS), each from the site's totals or the prefix's keys."""
    return "\n    UNION ALL\n    ".join(_site_or_keyed(columns, table, unit, low, high, where, group, site_group)
                                      for table, unit, low, high in _PARTS)


# The top lists (toplists.py) count the rows up to a watermark; a query adds the raw rows above it
# within the range's hours, the tail, a few seconds' worth while the writer runs. Each list's values
# as the tables hold them, and as SQL per raw row (alias r) for the tail.
_PATH_VALUES: Tuple[Tuple[str, str], ...] = (
    ("hits", "1"),
    ("client_errors", "coalesce(r.http_status >= 400 AND r.http_status < 500, 0)"),
    ("server_errors", "coalesce(r.http_status >= 500, 0)"),
    ("bytes", "coalesce(r.body_size, 0)"),
    ("duration_us_sum", "coalesce(r.duration_us, 0)"),
    ("timed", "r.duration_us IS NOT NULL"),
)
_HITS: Tuple[Tuple[str, str], ...] = (("hits", "1"),)
_TAIL_HOURS = (f"r.start_ms >= (SELECT first_hour FROM range) * {HOUR_MS} "
               f"AND r.start_ms < (SELECT end_hour FROM range) * {HOUR_MS}")


def _toplist(name: str, column: str, values: Tuple[Tuple[str, str], ...], where: str = "true",
             raw_where: str = "true") -> str:
    """The range's rows of top list ``name`` (its id as ``id`` and ``values``), UNION ALL, for a GROUP BY id.

    Its three parts as ``_PARTS`` (the table's rows as they are: grouping each part first would sort
    each of them, then their union again), and the tail: the raw rows above the watermark in the
    range's hours, a NULL ``column`` as the tables' 0. ``where`` filters the tables' rows (alias t),
    ``raw_where`` the tail's (alias r).
    """
    parts = []
    for table, unit, low, high in _PARTS:
        source = f"rollup_{name}_{'daily' if unit == 'day' else 'hourly'}"
        listed = ", ".join(f"t.{value}" for value, _ in values)
        parts.append(f"SELECT t.{column} AS id, {listed} FROM {source} t WHERE t.{unit} >= {low} AND t.{unit} < {high} "
                     f"AND {where}")
    per_row = ", ".join(f"{sql} AS {value}" for value, sql in values)
    # The rowid range first: SQLite seeks to the watermark and reads only the ids above it.
    parts.append(f"SELECT coalesce(r.{column}, 0) AS id, {per_row} FROM request_log r WHERE {TAIL} "
                 f"AND {_TAIL_HOURS} AND {raw_where}")
    return "\n    UNION ALL\n    ".join(parts)


_SUMS = ("sum(t.hits) AS hits, sum(t.hits * (t.is_bot != 0)) AS bots, "
         "sum(t.hits * (t.status_class = 4)) AS client_errors, sum(t.hits * (t.status_class = 5)) AS server_errors, "
         "sum(t.bytes) AS bytes, sum(t.duration_us_sum) AS duration_us_sum, sum(t.hits * (t.bucket >= 0)) AS timed, "
         "max(t.duration_us_max) AS longest")
_SUMMED = ("sum(hits) AS requests, sum(bots) AS bots, sum(client_errors) AS client_errors, "
           "sum(server_errors) AS server_errors, sum(bytes) AS bytes, "
           "round(sum(duration_us_sum) / 1000.0 / nullif(sum(timed), 0), 2) AS avg_ms, max(longest) / 1000.0 AS max_ms")
_BUCKETS = "t.bucket, t.hits, t.duration_us_max AS longest"
# Raw rows in the range: a scan of request_log, which has no index on start_ms unless its owner
# added docs/schema.md's, which SQLite then uses for the range.
_RAW_PREFIX = "(r.prefix = '' OR l.path_id IN (SELECT id FROM wanted_paths))"
_RAW_RANGE = f"l.start_ms >= r.start_ms AND l.start_ms < r.end_ms AND {_RAW_PREFIX}"
_LABEL = "coalesce(rt.name, p.name, '(unknown)')"
_LABEL_JOINS = "LEFT JOIN routes rt ON rt.id = {t}.route_id AND {t}.route_id != 0 LEFT JOIN paths p ON p.id = {t}.path_id AND {t}.path_id != 0"
_TIMED_HITS = "sum(t.hits * (t.bucket >= 0))"
_AVG_MS = f"round(sum(t.duration_us_sum) / 1000.0 / nullif({_TIMED_HITS}, 0), 2)"
_HOUR_TEXT = "strftime('%Y-%m-%dT%H:00Z', {hour} * 3600, 'unixepoch')"
_DAY_TEXT = "date({day} * 86400, 'unixepoch')"
# The charts over time per unit: the rows summed per unit, and the unit as text.
_UNITS = {"hour": (_hourly, _HOUR_TEXT), "day": (_daily, _DAY_TEXT)}


def _traffic_sums(unit: str) -> str:
    """traffic_by_hour's and traffic_by_day's columns, per ``unit``."""
    return (f"t.{unit}, sum(t.hits) AS requests, sum(t.hits * (t.is_bot = 0)) AS people, "
            "sum(t.hits * (t.is_bot != 0)) AS bots, sum(t.hits * (t.status_class = 4)) AS client_errors, "
            f"sum(t.hits * (t.status_class = 5)) AS server_errors, sum(t.bytes) AS bytes, {_AVG_MS} AS avg_ms")


def _query(title: str, description: str, sql: str, prefix: bool = True) -> dict:
    params: List[str] = ["start", "end"] + (["path_prefix"] if prefix else [])
    return {"title": title, "description": description, "sql": sql.strip() + "\n", "params": params}


_TRAFFIC_BY_HOUR = f"""
WITH {_range(True)},
per_hour AS (
    {_hourly(_traffic_sums("hour"))}
),
-- Every hour from the first with traffic to the last, so that a chart shows quiet hours as zeros.
series (hour, last) AS (
    SELECT min(hour), max(hour) FROM per_hour WHERE hour IS NOT NULL
    UNION ALL
    SELECT hour + 1, last FROM series WHERE hour < last
)
SELECT {_HOUR_TEXT.format(hour="s.hour")} AS hour, coalesce(h.requests, 0) AS requests,
       coalesce(h.people, 0) AS people, coalesce(h.bots, 0) AS bots,
       coalesce(h.client_errors, 0) AS client_errors, coalesce(h.server_errors, 0) AS server_errors,
       coalesce(h.bytes, 0) AS bytes, h.avg_ms
FROM series s LEFT JOIN per_hour h ON h.hour = s.hour
WHERE s.hour IS NOT NULL
ORDER BY s.hour
"""

# With a prefix, only the ids of the paths it matches: a test on the bound parameter, evaluated once.
_PATH_PREFIX = "(coalesce(:path_prefix, '') = '' OR {t}.path_id IN (SELECT id FROM wanted_paths))"

_TOP_PATHS = f"""
WITH {_range(True)},
per_path AS (
    SELECT id AS path_id, sum(hits) AS requests, sum(client_errors) AS client_errors,
           sum(server_errors) AS server_errors, sum(bytes) AS bytes,
           round(sum(duration_us_sum) / 1000.0 / nullif(sum(timed), 0), 2) AS avg_ms
    FROM ({_toplist("paths", "path_id", _PATH_VALUES, _PATH_PREFIX.format(t="t"), _PATH_PREFIX.format(t="r"))})
    GROUP BY id
)
SELECT coalesce(p.name, '(unknown)') AS path, x.requests,
       round(100.0 * x.requests / sum(x.requests) OVER (), 2) AS percent,
       x.client_errors, x.server_errors, x.bytes, x.avg_ms
FROM per_path x LEFT JOIN paths p ON p.id = x.path_id AND x.path_id != 0
ORDER BY x.requests DESC, path
LIMIT 100
"""

_TRAFFIC_BY_DAY = f"""
WITH {_range(True)},
per_day AS (
    {_daily(_traffic_sums("day"))}
),
series (day, last) AS (
    SELECT min(day), max(day) FROM per_day WHERE day IS NOT NULL
    UNION ALL
    SELECT day + 1, last FROM series WHERE day < last
)
SELECT {_DAY_TEXT.format(day="s.day")} AS day, coalesce(d.requests, 0) AS requests,
       coalesce(d.people, 0) AS people, coalesce(d.bots, 0) AS bots,
       coalesce(d.client_errors, 0) AS client_errors, coalesce(d.server_errors, 0) AS server_errors,
       coalesce(d.bytes, 0) AS bytes, d.avg_ms
FROM series s LEFT JOIN per_day d ON d.day = s.day
WHERE s.day IS NOT NULL
ORDER BY s.day
"""

# per_key's columns: the values of _PER_ROUTE each needs, and how per_key shows them.
_KEY_COLUMNS = {
    "requests": (("hits",), "sum(hits) AS requests"),
    "bots": (("bots",), "sum(bots) AS bots"),
    "client_errors": (("client_errors",), "sum(client_errors) AS client_errors"),
    "server_errors": (("server_errors",), "sum(server_errors) AS server_errors"),
    "bytes": (("bytes",), "sum(bytes) AS bytes"),
    "avg_ms": (("duration_us_sum", "timed"), "round(sum(duration_us_sum) / 1000.0 / nullif(sum(timed), 0), 2) AS avg_ms"),
    "timed": (("timed",), "sum(timed) AS timed"),
    "max_ms": (("duration_us_max",), "max(duration_us_max) / 1000.0 AS max_ms"),
}


def _per_key(*columns: str) -> str:
    """The CTE per_key: ``columns`` (of _KEY_COLUMNS) per route (or path without a route) over the range."""
    values = dict.fromkeys(value for column in columns for value in _KEY_COLUMNS[column][0])
    summed = ", ".join(_KEY_COLUMNS[column][1] for column in columns)
    return f""",
per_key AS (
    SELECT route_id, path_id, {summed}
    FROM ({_per_route_rows(values)})
    GROUP BY route_id, path_id
)"""


_TOP_ROUTES = f"""
WITH {_range(True)}{_per_key("requests", "bots", "client_errors", "server_errors", "bytes", "avg_ms")}
SELECT {_LABEL} AS route, CASE WHEN x.route_id != 0 THEN 'route' ELSE 'path' END AS kind, x.requests,
       round(100.0 * x.requests / sum(x.requests) OVER (), 2) AS percent, x.bots,
       x.client_errors, x.server_errors, x.bytes, x.avg_ms
FROM per_key x {_LABEL_JOINS.format(t="x")}
ORDER BY x.requests DESC, route
LIMIT 100
"""

_ERROR_PATHS = f"""
WITH {_range(True)}{_per_key("requests", "client_errors", "server_errors")}
SELECT {_LABEL} AS route, CASE WHEN x.route_id != 0 THEN 'route' ELSE 'path' END AS kind,
       x.client_errors + x.server_errors AS errors, x.client_errors, x.server_errors, x.requests,
       round(100.0 * (x.client_errors + x.server_errors) / x.requests, 2) AS error_percent
FROM per_key x {_LABEL_JOINS.format(t="x")}
WHERE x.client_errors + x.server_errors > 0
ORDER BY errors DESC, x.server_errors DESC, route
LIMIT 100
"""


def _percentile(q: float) -> str:
    """SQL for quantile ``q`` in ms from a window row (bucket, longest, below, total), nearest rank.

    Among the rows of one key, the smallest value where the running total reaches the rank is the
    bucket holding it: values only grow with the bucket, since a bucket's longest duration lies in it.
    """
    rank = f"max(1, ceil({q} * total - 1e-9))"
    return (f"round(min(CASE WHEN below >= {rank} THEN min(power(2, (bucket + 0.5) / 8.0) - 1, longest) END) "
            f"/ 1000.0, 2)")


# The units of the range's three parts (_PARTS), numbered as there: what the latency rows of the
# ranked routes are looked up by, so that each is a seek on the table's key (unit, route, path).
_PART_UNITS = """
part_units (part, unit, last) AS (
    SELECT 0, full_from, full_until FROM range
    UNION ALL SELECT 1, first_hour, min(end_hour, full_from * 24) FROM range
    UNION ALL SELECT 2, max(first_hour, full_until * 24), end_hour FROM range
    UNION ALL SELECT part, unit + 1, last FROM part_units WHERE unit + 1 < last
)"""


def _ranked_latency() -> str:
    """The latency rows of the routes in ``ranked`` over the range's parts: its whole days from
    rollup_route_latency_daily, its other hours from rollup_hourly (route_summaries.py has no
    hourly table), each a seek per unit and route on the table's key.

    rollup_hourly's rows without a duration (bucket -1) come too, for the caller to leave out: a
    test on the bucket here makes SQLite 3.40 scan all of rollup_hourly first for a Bloom filter.
    """
    parts = []
    for number, (table, unit, _, _) in enumerate(_PARTS):
        source = "rollup_route_latency_daily" if unit == "day" else table
        parts.append(f"SELECT t.route_id, t.path_id, t.bucket, t.hits, t.duration_us_max AS longest "
                     f"FROM part_units u CROSS JOIN ranked k CROSS JOIN {source} t "
                     f"ON t.{unit} = u.unit AND t.route_id = k.route_id AND t.path_id = k.path_id "
                     f"WHERE u.part = {number} AND u.unit < u.last")
    return "\n    UNION ALL\n    ".join(parts)


_SLOWEST_ROUTES = f"""
WITH {_range(True)}{_per_key("requests", "timed", "avg_ms", "max_ms")},
-- A route seen a handful of times has its slowest request for p95: only those with a share of the traffic.
ranked AS (
    SELECT route_id, path_id FROM per_key
    WHERE timed > 0 AND timed >= {SLOWEST_MIN_SHARE} * (SELECT sum(timed) FROM per_key)
),{_PART_UNITS},
buckets AS (
    SELECT route_id, path_id, bucket, sum(hits) AS hits, max(longest) AS longest
    FROM ({_ranked_latency()})
    GROUP BY route_id, path_id, bucket
),
running AS (
    SELECT route_id, path_id, bucket, longest,
           sum(hits) OVER (PARTITION BY route_id, path_id ORDER BY bucket) AS below,
           sum(hits) OVER (PARTITION BY route_id, path_id) AS total
    FROM buckets
    WHERE bucket >= 0
),
quantiles AS (
    SELECT route_id, path_id, {_percentile(0.5)} AS p50_ms, {_percentile(0.95)} AS p95_ms,
           {_percentile(0.99)} AS p99_ms
    FROM running GROUP BY route_id, path_id
)
SELECT {_LABEL} AS route, CASE WHEN x.route_id != 0 THEN 'route' ELSE 'path' END AS kind,
       q.p50_ms, q.p95_ms, q.p99_ms, x.avg_ms, x.max_ms, x.requests
FROM quantiles q JOIN per_key x ON x.route_id = q.route_id AND x.path_id = q.path_id
{_LABEL_JOINS.format(t="x")}
ORDER BY q.p95_ms DESC, q.p99_ms DESC, route
LIMIT 100
"""

def _latency_over_time(unit: str) -> str:
    """latency_over_time's SQL per hour, or latency_by_day's per day."""
    rows, text = _UNITS[unit]
    return f"""
WITH {_range(True)},
buckets AS (
    SELECT {unit}, bucket, sum(hits) AS hits, max(longest) AS longest
    FROM ({rows(f"t.{unit}, " + _BUCKETS, where="t.bucket >= 0", group=None)})
    GROUP BY {unit}, bucket
),
running AS (
    SELECT {unit}, bucket, longest, sum(hits) OVER (PARTITION BY {unit} ORDER BY bucket) AS below,
           sum(hits) OVER (PARTITION BY {unit}) AS total
    FROM buckets
)
SELECT {text.format(**{unit: unit})} AS {unit}, {_percentile(0.5)} AS p50_ms, {_percentile(0.95)} AS p95_ms,
       {_percentile(0.99)} AS p99_ms, max(total) AS timed
FROM running
GROUP BY running.{unit}
ORDER BY running.{unit}
"""


_SUMMARY = f"""
WITH {_range(True)},
totals AS (
    SELECT {_SUMMED} FROM ({_site_rolled(_SUMS, group="t.route_id, t.path_id", site_group="")})
),
buckets AS (
    SELECT bucket, sum(hits) AS hits, max(longest) AS longest FROM ({_site_rolled(_BUCKETS, where="t.bucket >= 0")})
    GROUP BY bucket
),
running AS (
    SELECT bucket, longest, sum(hits) OVER (ORDER BY bucket) AS below, sum(hits) OVER () AS total FROM buckets
),
quantiles AS (
    SELECT {_percentile(0.5)} AS p50_ms, {_percentile(0.95)} AS p95_ms, {_percentile(0.99)} AS p99_ms FROM running
)
SELECT strftime('%Y-%m-%dT%H:%M:%fZ', r.start_ms / 1000.0, 'unixepoch') AS start,
       strftime('%Y-%m-%dT%H:%M:%fZ', r.end_ms / 1000.0, 'unixepoch') AS end,
       coalesce(x.requests, 0) AS requests, coalesce(x.requests - x.bots, 0) AS people, coalesce(x.bots, 0) AS bots,
       round(100.0 * x.bots / x.requests, 2) AS bot_percent, coalesce(x.client_errors, 0) AS client_errors,
       coalesce(x.server_errors, 0) AS server_errors, round(100.0 * x.server_errors / x.requests, 2) AS server_error_percent,
       coalesce(x.bytes, 0) AS bytes, x.avg_ms, q.p50_ms, q.p95_ms, q.p99_ms
FROM range r, totals x, quantiles q
WHERE r.start_ms < r.end_ms
"""

_BOTS_AND_HUMANS = f"""
WITH {_range(True)},
per_kind AS (
    SELECT is_bot != 0 AS is_bot, {_SUMMED}
    FROM ({_site_rolled("t.is_bot, " + _SUMS, group="t.route_id, t.path_id, t.method_id, t.status_class, t.is_bot",
                        site_group="t.status_class, t.is_bot")})
    GROUP BY 1
)
SELECT CASE WHEN is_bot THEN 'bots' ELSE 'people' END AS agent, requests,
       round(100.0 * requests / sum(requests) OVER (), 2) AS percent, client_errors, server_errors, bytes, avg_ms
FROM per_kind
ORDER BY is_bot
"""

def _status_over_time(unit: str) -> str:
    """status_over_time's SQL per hour, or status_by_day's per day, every unit from the first with
    traffic to the last."""
    rows, text = _UNITS[unit]
    sums = (f"t.{unit}, sum(t.hits) AS requests, " + ", ".join(
        f"sum(t.hits * (t.status_class = {n})) AS s{n}xx" for n in range(1, 6))
        + ", sum(t.hits * (t.status_class NOT BETWEEN 1 AND 5)) AS no_response")
    return f"""
WITH {_range(True)},
per_{unit} AS (
    {rows(sums)}
),
series ({unit}, last) AS (
    SELECT min({unit}), max({unit}) FROM per_{unit} WHERE {unit} IS NOT NULL
    UNION ALL
    SELECT {unit} + 1, last FROM series WHERE {unit} < last
)
SELECT {text.format(**{unit: f"s.{unit}"})} AS {unit}, coalesce(h.requests, 0) AS requests,
       coalesce(h.s1xx, 0) AS "1xx", coalesce(h.s2xx, 0) AS "2xx", coalesce(h.s3xx, 0) AS "3xx",
       coalesce(h.s4xx, 0) AS "4xx", coalesce(h.s5xx, 0) AS "5xx", coalesce(h.no_response, 0) AS no_response
FROM series s LEFT JOIN per_{unit} h ON h.{unit} = s.{unit}
WHERE s.{unit} IS NOT NULL
ORDER BY s.{unit}
"""


_VISITORS_BY_DAY = f"""
WITH {_range(True)},
-- count(*) per day and bot flag, the key's order, rather than a sum per visitor: a third of the time.
-- The visitor sets hold no path: with a prefix, distinct (address, agent) pairs of the raw rows.
per_kind AS (
    SELECT v.day, v.is_bot != 0 AS is_bot, count(*) AS visitors
    FROM rollup_visitors_daily v
    WHERE {_BLANK_PREFIX} AND v.day >= (SELECT first_day FROM range) AND v.day < (SELECT end_day FROM range)
    GROUP BY v.day, v.is_bot
    UNION ALL
    SELECT day, is_bot, count(*) AS visitors FROM (
        SELECT DISTINCT r.start_ms / {DAY_MS} AS day, coalesce(u.is_bot, 0) != 0 AS is_bot,
               coalesce(r.forwarded_ip_id, r.client_ip_id) AS address, r.user_agent_id AS agent
        FROM request_log r LEFT JOIN user_agents u ON u.id = r.user_agent_id
        WHERE coalesce(:path_prefix, '') != '' AND r.start_ms >= (SELECT first_day FROM range) * {DAY_MS}
          AND r.start_ms < (SELECT end_day FROM range) * {DAY_MS} AND r.path_id IN (SELECT id FROM wanted_paths))
    GROUP BY day, is_bot
)
SELECT {_DAY_TEXT.format(day="day")} AS day, sum(visitors * (is_bot = 0)) AS people, sum(visitors * is_bot) AS bots,
       sum(visitors) AS visitors
FROM per_kind
GROUP BY per_kind.day
ORDER BY per_kind.day
"""

_BYTES_SERVED = f"""
WITH {_range(True)}{_per_key("requests", "bytes")}
SELECT {_LABEL} AS route, CASE WHEN x.route_id != 0 THEN 'route' ELSE 'path' END AS kind,
       x.bytes, round(x.bytes / 1e6, 3) AS megabytes, round(100.0 * x.bytes / nullif(sum(x.bytes) OVER (), 0), 2) AS percent,
       x.requests, round(1.0 * x.bytes / x.requests) AS bytes_per_request
FROM per_key x {_LABEL_JOINS.format(t="x")}
ORDER BY x.bytes DESC, route
LIMIT 100
"""

# The site part of a referer: what lies between '://' and the next '/', without a leading 'www.'.
_SITE = """lower(CASE WHEN instr(f.name, '://') > 0
    THEN substr(substr(f.name, instr(f.name, '://') + 3), 1, instr(substr(f.name, instr(f.name, '://') + 3) || '/', '/') - 1)
    ELSE f.name END)"""

# The top lists of referrers and agents have no path: with a prefix, these read the raw rows of its
# paths in the range's hours. Each source behind a test on the bound parameter, so only one reads rows.
_BLANK_ONLY = "coalesce(:path_prefix, '') = ''"
_RAW_OF_PREFIX = (f"SELECT coalesce(r.{{column}}, 0) AS id, 1 AS hits FROM request_log r "
                  f"WHERE coalesce(:path_prefix, '') != '' AND {_TAIL_HOURS} AND r.path_id IN (SELECT id FROM wanted_paths)")


def _per_id(name: str, column: str) -> str:
    """Requests per ``column`` id (0 for none) over the range: the top list and its tail, or a prefix's raw rows."""
    return (f"SELECT id, sum(hits) AS requests FROM ({_toplist(name, column, _HITS, _BLANK_ONLY, _BLANK_ONLY)}"
            f"\n    UNION ALL\n    {_RAW_OF_PREFIX.format(column=column)}) GROUP BY id")


_PER_REFERER = f""",
per_referer AS (
    {_per_id("referers", "referer_id")}
)"""

_REFERRERS = f"""
WITH {_range(True)}{_PER_REFERER}
SELECT coalesce(f.name, '(none)') AS referrer, x.requests, round(100.0 * x.requests / sum(x.requests) OVER (), 2) AS percent
FROM per_referer x LEFT JOIN referers f ON f.id = x.id AND x.id != 0
ORDER BY x.requests DESC, referrer
LIMIT 100
"""

_REFERRING_SITES = f"""
WITH {_range(True)}{_PER_REFERER},
per_site AS (
    SELECT CASE WHEN f.name IS NULL THEN '(none)' ELSE {_SITE} END AS site, sum(x.requests) AS requests,
           count(f.id) AS referrers
    FROM per_referer x LEFT JOIN referers f ON f.id = x.id AND x.id != 0
    GROUP BY 1
)
SELECT CASE WHEN site LIKE 'www.%' THEN substr(site, 5) ELSE site END AS site, sum(requests) AS requests,
       round(100.0 * sum(requests) / sum(sum(requests)) OVER (), 2) AS percent, sum(referrers) AS referrers
FROM per_site
GROUP BY 1
ORDER BY requests DESC, site
LIMIT 100
"""

_AGENTS = f"""
WITH {_range(True)},
per_agent AS (
    {_per_id("agents", "user_agent_id")}
),
per_class AS (
    SELECT coalesce(u.browser, '(unclassified)') AS browser, coalesce(u.os, '(unclassified)') AS os,
           coalesce(u.device, '(unclassified)') AS device,
           CASE WHEN u.is_bot = 1 THEN 'bot' WHEN u.is_bot = 0 THEN 'person' ELSE '(unclassified)' END AS agent,
           sum(x.requests) AS requests, count(*) AS agents
    FROM per_agent x LEFT JOIN user_agents u ON u.id = x.id AND x.id != 0
    GROUP BY 1, 2, 3, 4
)
SELECT browser, os, device, agent, requests, round(100.0 * requests / sum(requests) OVER (), 2) AS percent,
       agents AS user_agents
FROM per_class
ORDER BY requests DESC, browser, os, device
LIMIT 100
"""

_LAST_REQUESTS = f"""
WITH {_range(True)}
SELECT l.id, strftime('%Y-%m-%dT%H:%M:%fZ', l.start_ms / 1000.0, 'unixepoch') AS start, m.name AS method,
       p.name AS path, q.name AS query_string, l.http_status AS status, round(l.duration_us / 1000.0, 2) AS duration_ms,
       l.body_size AS bytes, rt.name AS route,
       CASE WHEN u.is_bot = 1 THEN 'bot' WHEN u.is_bot = 0 THEN 'person' END AS agent, u.browser, u.os,
       f.name AS referrer, ip.name AS client_ip, u.name AS user_agent
FROM request_log l CROSS JOIN range r  -- CROSS JOIN: read request_log newest first, stop at the limit
LEFT JOIN methods m ON m.id = l.method_id
LEFT JOIN paths p ON p.id = l.path_id
LEFT JOIN query_strings q ON q.id = l.query_string_id
LEFT JOIN routes rt ON rt.id = l.route_id
LEFT JOIN user_agents u ON u.id = l.user_agent_id
LEFT JOIN referers f ON f.id = l.referer_id
LEFT JOIN client_ips ip ON ip.id = coalesce(l.forwarded_ip_id, l.client_ip_id)
WHERE {_RAW_RANGE}
ORDER BY l.id DESC
LIMIT {LAST_REQUESTS}
"""

QUERIES: Dict[str, dict] = {
    "summary": _query(
        "Summary",
        "One row for the range: requests, people and bots, 4xx and 5xx, bytes, mean duration and the p50, p95 and "
        "p99 latency in milliseconds (within 4.4%), from the rollups. The range it read is in start and end.",
        _SUMMARY),
    "traffic_by_hour": _query(
        "Traffic per hour",
        "Requests per hour (UTC): people and bots, 4xx and 5xx, response bytes and mean duration, from the hourly "
        "rollups. Quiet hours between the first and the last with traffic are rows of zeros.",
        _TRAFFIC_BY_HOUR),
    "traffic_by_day": _query(
        "Traffic per day",
        "Requests per day (UTC), as traffic_by_hour, from the daily rollups: every day the range touches, whole.",
        _TRAFFIC_BY_DAY),
    "top_routes": _query(
        "Top routes",
        "The 100 routes with the most requests, from the rollups: the route template where the framework gave one "
        "(/items/{item_id}), else the path. Shares, bots, 4xx, 5xx, bytes and mean duration.",
        _TOP_ROUTES),
    "top_paths": _query(
        "Top paths",
        "The 100 most requested paths as requested (/items/42, /items/43 ...), with shares, 4xx, 5xx, bytes and "
        "mean duration, from the top lists of paths (and the raw rows they have not counted yet). top_routes groups "
        "them by route.",
        _TOP_PATHS),
    "error_paths": _query(
        "Top error routes and paths",
        "Routes (or paths without a route) by their 4xx and 5xx responses, from the rollups, with the share of "
        "their requests that failed.",
        _ERROR_PATHS),
    "slowest_routes": _query(
        "Slowest routes",
        "Routes (or paths) by p95 latency, with p50 and p99, in milliseconds, read from the rollups' latency "
        "histogram (within 4.4%), and the mean and longest duration.",
        _SLOWEST_ROUTES),
    "status_over_time": _query(
        "Status mix over time",
        "Requests per hour by status class (1xx to 5xx, and no response sent), from the hourly rollups.",
        _status_over_time("hour")),
    "status_by_day": _query(
        "Status mix per day",
        "Requests per day (UTC) by status class, as status_over_time, from the daily rollups: every day the range "
        "touches, whole.",
        _status_over_time("day")),
    "latency_over_time": _query(
        "Latency over time",
        "p50, p95 and p99 latency per hour (UTC), in milliseconds, from the hourly rollups' latency histogram "
        "(within 4.4%); timed counts the requests that have a duration.",
        _latency_over_time("hour")),
    "latency_by_day": _query(
        "Latency per day",
        "p50, p95 and p99 latency per day (UTC), as latency_over_time, from the daily rollups: every day the range "
        "touches, whole.",
        _latency_over_time("day")),
    "bots_and_humans": _query(
        "Bots and people",
        "Requests from bots against those from people, from the rollups; an agent not yet classified counts as a "
        "person, as in the rollups.",
        _BOTS_AND_HUMANS),
    "visitors_by_day": _query(
        "Visitors per day",
        "Distinct visitors (address and agent) per day (UTC), people and bots, counted exactly in the rollups. "
        "Days cannot be added up: each day hashes its visitors with its own salt. With a path prefix, the "
        "distinct address and agent pairs of the raw rows for those paths, on the days whose rows are kept.",
        _VISITORS_BY_DAY),
    "bytes_served": _query(
        "Bytes served",
        "Response body bytes per route (or path), the largest first, with their share of all bytes served, from "
        "the rollups.",
        _BYTES_SERVED),
    "referrers": _query(
        "Referrers",
        "The 100 Referer headers with the most requests ('(none)': typed, bookmarked or not sent), from the top "
        "list of referrers; with a path prefix, from the raw rows.",
        _REFERRERS),
    "referring_sites": _query(
        "Referring sites",
        "Requests per referring site (the Referer's host, without www.), from the top list of referrers; with a "
        "path prefix, from the raw rows.",
        _REFERRING_SITES),
    "agents": _query(
        "Browsers, systems and devices",
        "Requests per browser, operating system, device and bot flag, as agents.py classified each User-Agent, "
        "from the top list of agents; with a path prefix, from the raw rows.",
        _AGENTS),
    "last_requests": _query(
        "Last requests",
        f"The {LAST_REQUESTS} newest requests in the range, newest first, from the raw rows.",
        _LAST_REQUESTS),
}
