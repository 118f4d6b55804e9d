"""A large, realistic log file made with set-based SQL: 10,000,000 rows in minutes, rollups included.

    python3 scripts/dev.py bench synthetic_log [--rows 10000000] [--days 30] [--seed 0] [--out FILE]

The rows read like a site's traffic over ``--days`` days up to now: 5,000 paths (20 fixed pages,
static files and bots' probes, then items, posts, API objects and user profiles under 4 route
templates, and 1,000 documentation pages without a route), chosen with a Zipf-like skew; 300 user
agents (40 bots: crawlers, monitors, HTTP libraries), each with a browser, OS, device and bot flag
like those agents.py gives; 20,000 client addresses; 200 referers, absent for half the requests;
mostly GET; 2xx, 304, 404 and some 5xx; log-normal durations with a slow tail; traffic that swings
3 to 1 over each day. Sessions of 8 requests come from 60,000 visitors (an address and an agent,
one in five a bot), who come back. Every value is a function of the row number and ``--seed``, so
a seed gives the same rows, their times shifted to end at the moment it runs.

The rollups are then filled as the writer would have: ``Rollups().rebuild`` for the hourly and
daily tables and the site's totals summed from them (schema version 3, exact), and the visitor sets with one SELECT DISTINCT per table, an integer of the
(address, agent) ids standing in for the salted hash (no salt exists for past days, and the
counts are the same). Other benchmarks import ``make_log``.
"""
from __future__ import annotations

import argparse
import math
import os
import pathlib
import sqlite3
import sys
import time
from typing import Callable, Optional

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from asgi_log_to_sqlite import create_file, toplists  # noqa: E402
from asgi_log_to_sqlite.rollups import HOUR_MS, Rollups, ensure_math  # noqa: E402

DAY_MS = 86_400_000
PATHS = 5_000
AGENTS = 300
BOTS = 40  # agents 1..BOTS are bots
ADDRESSES = 20_000
REFERERS = 200
VISITORS = 60_000  # distinct (address, agent) pairs the sessions are drawn from
SESSION = 8  # consecutive rows of one visitor
CHUNK = 500_000  # rows per INSERT statement and transaction

FIXED_PAGES = (  # (path, route or None, content type id)
    ("/", "/", 1), ("/about", "/about", 1), ("/pricing", "/pricing", 1), ("/blog", "/blog", 1),
    ("/docs", None, 1), ("/login", "/login", 1), ("/signup", "/signup", 1), ("/search", "/search", 1),
    ("/api/health", "/api/health", 2), ("/favicon.ico", None, 5), ("/robots.txt", None, 6),
    ("/sitemap.xml", None, 7), ("/static/app.css", None, 3), ("/static/app.js", None, 4),
    ("/static/logo.png", None, 5), ("/feed.xml", "/feed.xml", 7), ("/contact", "/contact", 1),
    ("/wp-login.php", None, 6), ("/.env", None, 6), ("/admin/config.php", None, 6),
)
PROBES = (18, 19, 20)  # path ids of bots' probes, always 404
TEMPLATES = (  # path id k > 20: by k % 5, (path pattern, route, content type id); 4 has no route
    ("/items/{k}", "/items/{item_id}", 1), ("/blog/post-{k}", "/blog/{slug}", 1),
    ("/api/v1/items/{k}", "/api/v1/items/{item_id}", 2), ("/users/{k}/profile", "/users/{user_id}/profile", 1),
    ("/docs/page-{k}", None, 1),
)
CONTENT_TYPES = ("text/html; charset=utf-8", "application/json", "text/css", "application/javascript",
                 "image/png", "text/plain", "application/xml")
METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE")
BOT_AGENTS = (  # (name with {n}, browser family)
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html) v{n}", "Googlebot"),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) v{n}", "bingbot"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/) v{n}", "AhrefsBot"),
    ("curl/8.{n}.0", "curl"), ("python-requests/2.{n}.0", "Python Requests"),
    ("Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/) v{n}", "UptimeRobot"),
    ("Go-http-client/1.{n}", "Go-http-client"), ("facebookexternalhit/1.{n}", "FacebookBot"),
)
BROWSERS = (  # (name with {n}, browser, os, device)
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/1{n}.0.0.0 "
     "Safari/537.36", "Chrome", "Windows", "desktop"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{n} "
     "Safari/605.1.15", "Safari", "Mac OS X", "desktop"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:1{n}.0) Gecko/20100101 Firefox/1{n}.0", "Firefox", "Linux", "desktop"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/1{n}.0.0.0 Mobile "
     "Safari/537.36", "Chrome Mobile", "Android", "mobile"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_{n} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.{n} Mobile/15E148 Safari/604.1", "Mobile Safari", "iOS", "mobile"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/1{n}.0.0.0 "
     "Safari/537.36 Edg/1{n}.0.0.0", "Edge", "Windows", "desktop"),
    ("Mozilla/5.0 (iPad; CPU OS 17_{n} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{n} "
     "Mobile/15E148 Safari/604.1", "Mobile Safari", "iOS", "tablet"),
)
SEARCH_ENGINES = ("https://www.google.com/", "https://www.bing.com/", "https://duckduckgo.com/")
REFERER_SITES = ("https://news.ycombinator.com/item?id={n}", "https://www.reddit.com/r/python/comments/{n}/",
                 "https://t.co/{n}", "https://github.com/someone/project{n}", "https://example.com/blog/post-{n}")

M = 2_147_483_647  # 2^31 - 1, the Lehmer generator's modulus


def _uniform(multiplier: int, seed_column: str = "h") -> str:
    """SQL for a uniform number in [0, 1) from the row's hash, one independent-looking stream per multiplier."""
    return f"(({seed_column} * {multiplier}) % {M}) / {float(M)}"


def _rows_sql(rows: int, days: int, newest_ms: int, seed: int) -> str:
    """The INSERT of rows ?1..?2 of the log (row numbers from 1)."""
    span = days * DAY_MS
    first_ms = newest_ms - span
    u = [_uniform(a) for a in (48271, 69621, 16807, 39373, 40692, 40014, 41358, 45318, 52774, 62089)]
    visitor = f"(1 + CAST({_uniform(48271, 'hs')} * {VISITORS} AS INTEGER))"
    zipf = f"(1 + CAST({PATHS} * power({u[1]}, 3) AS INTEGER))"
    # Traffic swings 3 to 1 over each day: time warped by a sine of period one day, monotone in the row
    # number, and zero at both ends so that the rows start ``days`` ago and end now.
    phase = newest_ms % DAY_MS
    warp = f"({0.5 * DAY_MS / (2 * math.pi)} * sin(2 * pi() * ((tu - {phase}) % {DAY_MS}) / {DAY_MS}))"
    return f"""
WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2),
hashed AS (
    SELECT i, (i * 2654435761 + {seed * 7919 + 12345}) % {M - 1} + 1 AS h,
           ((i / {SESSION}) * 2246822519 + {seed * 104729 + 999}) % {M - 1} + 1 AS hs,
           {first_ms} + (i - 1) * {span} / {rows} AS tu
    FROM n
),
drawn AS (
    SELECT i, CAST(tu - {warp} AS INTEGER) AS start_ms,
           -- the session's visitor, who comes back in other sessions with the same address and agent
           {visitor} AS visitor,
           CASE WHEN {visitor} % 5 = 0 THEN 1 + ({visitor} / 5) % {BOTS}
                ELSE {BOTS + 1} + {visitor} * 7 % {AGENTS - BOTS} END AS agent,
           -- bots' probes only from bots (1 visitor in 5); the skewed draw steps over them
           CASE WHEN {visitor} % 5 = 0 AND {u[0]} < 0.08 THEN {PROBES[0]} + CAST({u[1]} * {len(PROBES)} AS INTEGER)
                WHEN {zipf} IN {PROBES} THEN {zipf} + {len(PROBES)} ELSE {zipf} END AS path,
           {u[2]} AS u_status, {u[3]} AS u_method, {u[4]} + {u[5]} + {u[6]} + {u[7]} AS u_sum4, {u[8]} AS u_slow,
           {u[9]} AS u_misc
    FROM hashed
),
shaped AS (
    SELECT d.*, CASE WHEN d.path IN {PROBES} THEN 404
                     WHEN d.u_status < 0.004 THEN 500 WHEN d.u_status < 0.006 THEN 503
                     WHEN d.u_status < 0.06 THEN 404 WHEN d.u_status < 0.11 THEN 304
                     WHEN d.u_status < 0.12 THEN 302 ELSE 200 END AS status,
           CASE WHEN d.u_method < 0.92 THEN 1 WHEN d.u_method < 0.97 THEN 2 WHEN d.u_method < 0.99 THEN 3
                WHEN d.u_method < 0.995 THEN 4 ELSE 5 END AS method,
           p.content_type AS content_type, p.route_id AS route_id, p.median_us AS median_us, p.size AS size
    FROM drawn d JOIN temp.synthetic_paths p ON p.id = d.path
)
INSERT INTO request_log (id, start_ms, duration_us, ttfb_us, method_id, path_id, query_string_id, user_agent_id,
    referer_id, accept_language_id, http_status, content_type_id, client_ip_id, host_id, route_id, body_size,
    request_size, flags, sample_rate)
SELECT i, start_ms, duration_us, duration_us * 3 / 4, method, path,
       CASE WHEN u_misc < 0.1 THEN 1 + CAST(u_misc * 10 * 50 AS INTEGER) END, agent,
       CASE WHEN agent > {BOTS} AND u_misc >= 0.5 THEN 1 + CAST(power((u_misc - 0.5) * 2, 2) * {REFERERS} AS INTEGER) END,
       CASE WHEN agent > {BOTS} THEN 1 + visitor % 5 END, status,
       CASE WHEN status = 404 THEN 6 ELSE content_type END, 1 + visitor * 7919 % {ADDRESSES}, 1, route_id,
       CASE WHEN status = 304 OR method = 3 THEN 0 WHEN status != 200 THEN 150 + visitor % 200
            ELSE CAST(size * (0.5 + u_misc) AS INTEGER) END,
       CASE WHEN method IN (2, 4) THEN 200 + visitor % 2000 ELSE 0 END, 0, 1.0
FROM (SELECT s.*, CAST(CASE WHEN status = 404 THEN 800 ELSE median_us END
                       * exp(0.9 * (u_sum4 - 2) * 1.7320508) * (CASE WHEN u_slow < 0.01 THEN 20 ELSE 1 END) AS INTEGER)
                  AS duration_us
      FROM shaped s)
"""


def _lookups(conn: sqlite3.Connection) -> None:
    """The lookup tables, and temp.synthetic_paths: each path's route, content type, median duration and size."""
    conn.executemany("INSERT INTO methods (id, name) VALUES (?, ?)", enumerate(METHODS, 1))
    conn.executemany("INSERT INTO content_types (id, name) VALUES (?, ?)", enumerate(CONTENT_TYPES, 1))
    conn.execute("INSERT INTO hosts (id, name) VALUES (1, 'example.com')")
    routes = sorted({route for _, route, _ in FIXED_PAGES if route} | {route for _, route, _ in TEMPLATES if route})
    route_ids = {route: n for n, route in enumerate(routes, 1)}
    conn.executemany("INSERT INTO routes (id, name) VALUES (?, ?)", ((n, route) for route, n in route_ids.items()))
    paths = []
    for k in range(1, PATHS + 1):
        if k <= len(FIXED_PAGES):
            name, route, content_type = FIXED_PAGES[k - 1]
        else:
            pattern, route, content_type = TEMPLATES[k % len(TEMPLATES)]
            name = pattern.format(k=k)
        median_us = {1: 6_000, 2: 2_500, 3: 250, 4: 250, 5: 300, 6: 400, 7: 3_000}[content_type]
        size = {1: 18_000, 2: 1_200, 3: 40_000, 4: 120_000, 5: 25_000, 6: 300, 7: 60_000}[content_type]
        paths.append((k, name, route_ids.get(route), content_type, median_us * (1 + k % 3), size))
    conn.executemany("INSERT INTO paths (id, name) VALUES (?, ?)", ((k, name) for k, name, *_ in paths))
    conn.execute("DROP TABLE IF EXISTS temp.synthetic_paths")
    conn.execute("CREATE TEMP TABLE synthetic_paths (id INTEGER PRIMARY KEY, name, route_id, content_type, "
                 "median_us, size)")
    conn.executemany("INSERT INTO temp.synthetic_paths VALUES (?, ?, ?, ?, ?, ?)", paths)
    agents = []
    for a in range(1, AGENTS + 1):
        if a <= BOTS:
            name, browser = BOT_AGENTS[a % len(BOT_AGENTS)]
            agents.append((a, name.format(n=a), browser, "Other", "bot", 1))
        else:
            name, browser, os_family, device = BROWSERS[a % len(BROWSERS)]
            agents.append((a, name.format(n=a), browser, os_family, device, 0))
    conn.executemany("INSERT INTO user_agents (id, name, browser, os, device, is_bot) VALUES (?, ?, ?, ?, ?, ?)",
                     agents)
    referers = list(SEARCH_ENGINES) + [REFERER_SITES[r % len(REFERER_SITES)].format(n=r)
                                       for r in range(len(SEARCH_ENGINES) + 1, REFERERS + 1)]
    conn.executemany("INSERT INTO referers (id, name) VALUES (?, ?)", enumerate(referers, 1))
    conn.executemany("INSERT INTO accept_languages (id, name) VALUES (?, ?)",
                     enumerate(("en-US,en;q=0.9", "en-GB,en;q=0.8", "de-DE,de;q=0.9", "fr-FR,fr;q=0.9", "ja"), 1))
    conn.executemany("INSERT INTO query_strings (id, name) VALUES (?, ?)", ((q, f"?page={q}") for q in range(1, 51)))
    conn.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ADDRESSES}) "
                 f"INSERT INTO client_ips (id, name) SELECT i, '198.' || (i / 65536 + 18) || '.' || (i / 256 % 256) "
                 f"|| '.' || (i % 256) FROM n")


# The visitor sets as the writer fills them, one integer per (address, agent) in place of its salted hash.
_VISITORS = (
    f"INSERT OR IGNORE INTO rollup_visitors_hourly (hour, is_bot, visitor) "
    f"SELECT DISTINCT l.start_ms / {HOUR_MS}, coalesce(u.is_bot, 0) != 0, "
    f"coalesce(l.forwarded_ip_id, l.client_ip_id, 0) * 1000003 + coalesce(l.user_agent_id, 0) "
    f"FROM request_log l LEFT JOIN user_agents u ON u.id = l.user_agent_id",
    "INSERT OR IGNORE INTO rollup_visitors_daily (day, is_bot, visitor) "
    "SELECT DISTINCT hour / 24, is_bot, visitor FROM rollup_visitors_hourly",
)


def make_log(path: str, rows: int = 10_000_000, days: int = 30, seed: int = 0,
             progress: Optional[Callable[[str, float], None]] = None) -> None:
    """Write a new log file at ``path`` with ``rows`` requests over the ``days`` days up to now, rollups filled
    and the top lists caught up (the watermark at the last row).

    ``progress(step, seconds)`` is called after each step (rows, rollups, visitors, toplists, analyze).
    """
    if rows < 1 or days < 1:
        raise ValueError(f"rows={rows!r}, days={days!r}: expected at least 1 row over at least 1 day")
    if os.path.exists(path):
        raise FileExistsError(f"{path}: already exists; make_log writes a new file")
    create_file(path)
    report = progress or (lambda step, seconds: None)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        ensure_math(conn)
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -200000")
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        _lookups(conn)
        conn.execute("COMMIT")
        insert = _rows_sql(rows, days, int(time.time() * 1000), seed)
        for first in range(1, rows + 1, CHUNK):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(insert, (first, min(first + CHUNK - 1, rows)))
            conn.execute("COMMIT")
        report("rows", time.perf_counter() - started)
        started = time.perf_counter()
        Rollups().rebuild(conn)
        report("rollups", time.perf_counter() - started)
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for sql in _VISITORS:
            conn.execute(sql)
        conn.execute("COMMIT")
        report("visitors", time.perf_counter() - started)
        started = time.perf_counter()
        # A chunk per transaction rather than the writer's small slices: nobody else writes the file yet.
        toplists.catch_up(conn, rows=CHUNK)
        report("toplists", time.perf_counter() - started)
        started = time.perf_counter()
        conn.execute("ANALYZE")
        report("analyze", time.perf_counter() - started)
    finally:
        conn.execute("DROP TABLE IF EXISTS temp.synthetic_paths")
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="synthetic.db", help="the file to write (must not exist)")
    args = parser.parse_args()
    started = time.perf_counter()
    make_log(args.out, args.rows, args.days, args.seed,
             progress=lambda step, seconds: print(f"{step:<9} {seconds:8.1f} s", flush=True))
    conn = sqlite3.connect(args.out)
    try:
        counts = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in ("request_log", "rollup_hourly", "rollup_daily", "rollup_traffic_hourly",
                                "rollup_traffic_daily", "rollup_routes_daily", "rollup_route_latency_daily",
                                "rollup_visitors_daily", "rollup_paths_daily",
                                "rollup_referers_daily", "rollup_agents_daily")}
    finally:
        conn.close()
    print(f"{'total':<9} {time.perf_counter() - started:8.1f} s   {args.out}: "
          f"{os.path.getsize(args.out) / 1e6:,.0f} MB, " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
