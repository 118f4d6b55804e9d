"""The log's ready-made queries: SQL text, titles and descriptions, nothing that needs Datasette.

Every query takes ``start`` and ``end`` and most take ``path_prefix``, all as text, as Datasette
passes them; an empty string is the default (the 7 days up to now; no prefix). docs/queries.md
has the range rules, which query reads what, and their timings on a 10,000,000-row log.
"""
from __future__ import annotations

from typing import Dict, List

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
DEFAULT_SPAN_MS = 7 * DAY_MS
LAST_REQUESTS = 100

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


_ROLLUP_COLUMNS = ("t.route_id, t.path_id, t.method_id, t.status_class, t.is_bot, t.bucket, t.hits, t.bytes, "
                   "t.duration_us_sum, t.duration_us_max")
_ROLLUP_PREFIX = ("(r.prefix = '' OR t.route_id IN (SELECT id FROM wanted_routes) "
                  "OR t.path_id IN (SELECT id FROM wanted_paths))")
# The rollups of the range's hours: whole days from rollup_daily (24 times fewer rows), the hours
# before the first whole day and after the last one from rollup_hourly.
_ROLLED = f""",
rolled AS (
    SELECT t.day * 24 AS hour, {_ROLLUP_COLUMNS}
    FROM range r JOIN rollup_daily t ON t.day >= r.full_from AND t.day < r.full_until WHERE {_ROLLUP_PREFIX}
    UNION ALL
    SELECT t.hour, {_ROLLUP_COLUMNS}
    FROM range r JOIN rollup_hourly t ON t.hour >= r.first_hour AND t.hour < min(r.end_hour, r.full_from * 24)
    WHERE {_ROLLUP_PREFIX}
    UNION ALL
    SELECT t.hour, {_ROLLUP_COLUMNS}
    FROM range r JOIN rollup_hourly t ON t.hour >= max(r.first_hour, r.full_until * 24) AND t.hour < r.end_hour
    WHERE {_ROLLUP_PREFIX}
)"""
# The range's hours from rollup_hourly alone, for queries that show each hour.
_HOURLY = f""",
hourly AS (
    SELECT t.hour, {_ROLLUP_COLUMNS}
    FROM range r JOIN rollup_hourly t ON t.hour >= r.first_hour AND t.hour < r.end_hour WHERE {_ROLLUP_PREFIX}
)"""
_DAILY = f""",
daily AS (
    SELECT t.day, {_ROLLUP_COLUMNS}
    FROM range r JOIN rollup_daily t ON t.day >= r.first_day AND t.day < r.end_day WHERE {_ROLLUP_PREFIX}
)"""
# Raw rows in the range; request_log has no index on start_ms, so this is a scan of the table.
_RAW_PREFIX = "(r.prefix = '' OR l.path_id IN (SELECT id FROM wanted_paths))"
_RAW_RANGE = f"l.start_ms >= r.start_ms AND l.start_ms < r.end_ms AND {_RAW_PREFIX}"
_LABEL = "coalesce(rt.name, p.name, '(unknown)')"
_LABEL_JOINS = "LEFT JOIN routes rt ON rt.id = {t}.route_id AND {t}.route_id != 0 LEFT JOIN paths p ON p.id = {t}.path_id AND {t}.path_id != 0"
_TIMED_HITS = "sum(CASE WHEN t.bucket >= 0 THEN t.hits ELSE 0 END)"
_AVG_MS = f"round(sum(t.duration_us_sum) / 1000.0 / nullif({_TIMED_HITS}, 0), 2)"
_HOUR_TEXT = "strftime('%Y-%m-%dT%H:00Z', {hour} * 3600, 'unixepoch')"
_DAY_TEXT = "date({day} * 86400, 'unixepoch')"


def _query(title: str, description: str, sql: str, prefix: bool = True) -> dict:
    params: List[str] = ["start", "end"] + (["path_prefix"] if prefix else [])
    return {"title": title, "description": description, "sql": sql.strip() + "\n", "params": params}


_TRAFFIC_BY_HOUR = f"""
WITH {_range(True)}{_HOURLY},
per_hour AS (
    SELECT t.hour, sum(t.hits) AS requests, sum(CASE WHEN t.is_bot THEN 0 ELSE t.hits END) AS people,
           sum(CASE WHEN t.is_bot THEN t.hits ELSE 0 END) AS bots,
           sum(CASE WHEN t.status_class = 4 THEN t.hits ELSE 0 END) AS client_errors,
           sum(CASE WHEN t.status_class = 5 THEN t.hits ELSE 0 END) AS server_errors,
           sum(t.bytes) AS bytes, {_AVG_MS} AS avg_ms
    FROM hourly t GROUP BY t.hour
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

_TOP_PATHS = f"""
WITH {_range(True)},
per_path AS (
    SELECT l.path_id, count(*) AS requests, sum(l.http_status >= 400 AND l.http_status < 500) AS client_errors,
           sum(l.http_status >= 500) AS server_errors, sum(l.body_size) AS bytes,
           round(avg(l.duration_us) / 1000.0, 2) AS avg_ms
    FROM range r JOIN request_log l ON {_RAW_RANGE}
    GROUP BY l.path_id
)
SELECT coalesce(p.name, '(unknown)') AS path, x.requests,
       round(100.0 * x.requests / sum(x.requests) OVER (), 2) AS percent,
       x.client_errors, x.server_errors, x.bytes, x.avg_ms
FROM per_path x LEFT JOIN paths p ON p.id = x.path_id
ORDER BY x.requests DESC, path
LIMIT 100
"""

QUERIES: Dict[str, dict] = {
    "traffic_by_hour": _query(
        "Traffic per hour",
        "Requests per hour (UTC), people and bots, 4xx and 5xx, response bytes and mean duration, from the hourly "
        "rollups. Hours without traffic between the first and the last are shown as zeros.",
        _TRAFFIC_BY_HOUR),
    "top_paths": _query(
        "Top paths",
        "The 100 most requested paths, as requested (one row per item id), from the raw rows: a scan of "
        "request_log, and only as far back as retention keeps rows. top_routes reads the rollups instead.",
        _TOP_PATHS),
}
