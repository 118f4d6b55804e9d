"""Rollups: hourly and daily aggregates and visitor sets, kept by the writer, rebuilt, merged.

Live logs come from the real middleware in front of a Starlette app (whose router sets
scope["route"]), through httpx.ASGITransport; several processes are real subprocesses. Rows of
other hours and days, which live logging cannot make, are written into a real log file with SQL
and rolled up by the same Rollups.update the writer calls, in a transaction of their own. What
the rollups should hold is recomputed here, in Python, from the raw rows.
"""
import asyncio
import json
import math
import random
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import asgi_log_to_sqlite
from asgi_log_to_sqlite import AsgiLogToSqlite, rollups
from asgi_log_to_sqlite.cli import cli
from asgi_log_to_sqlite.record import FLAG_DISCONNECTED, FLAG_EXCEPTION, FLAG_WEBSOCKET, Shaper
from asgi_log_to_sqlite.rollups import DAY_S, HOUR_MS, SALT_GRACE_S, Rollups, bucket_of, percentiles

from conftest import ok, scope_for, serve, subprocess_env

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CURL = "curl/8.5.0"
TABLES = ("rollup_hourly", "rollup_daily", "rollup_visitors_hourly", "rollup_visitors_daily",
          "rollup_traffic_hourly", "rollup_traffic_daily")


# ---- helpers -------------------------------------------------------------------------------------

def query(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def snapshot(path):
    """Every rollup table's rows, as sets; the site's totals and the sums per route checked against the detailed rollups."""
    found = {table: set(query(path, f"SELECT * FROM {table}")) for table in TABLES}
    for detailed, unit in (("rollup_hourly", "hour"), ("rollup_daily", "day")):
        summed = set(query(path, f"SELECT {unit}, status_class, is_bot, bucket, sum(hits), sum(bytes), "
                                 f"sum(duration_us_sum), max(duration_us_max) FROM {detailed} GROUP BY 1, 2, 3, 4"))
        assert found[detailed.replace("rollup_", "rollup_traffic_")] == summed, detailed
    routes, latency = per_route(path, "rollup_daily")  # per day only (route_summaries.py)
    assert set(query(path, "SELECT * FROM rollup_routes_daily")) == routes
    assert set(query(path, "SELECT * FROM rollup_route_latency_daily")) == latency
    return found


def per_route(path, detailed):
    """The per-route sums (route_summaries.py) as they should be, summed in Python from ``detailed``'s rows."""
    routes, latency = {}, {}

    def longest(a, b):
        return b if a is None else a if b is None else max(a, b)

    for unit, route, path_id, _, status, bot, bucket, hits, size, total, top in query(path, f"SELECT * FROM {detailed}"):
        sums = routes.setdefault((unit, route, path_id), [0, 0, 0, 0, 0, 0, 0, None])
        for n, value in enumerate((hits, hits * bot, hits * (status == 4), hits * (status == 5), size, total,
                                   hits * (bucket >= 0))):
            sums[n] += value
        sums[7] = longest(sums[7], top)
        if bucket >= 0:
            timed = latency.setdefault((unit, route, path_id, bucket), [0, None])
            timed[0] += hits
            timed[1] = longest(timed[1], top)
    return ({key + tuple(sums) for key, sums in routes.items()}, {key + tuple(sums) for key, sums in latency.items()})


def expected_rollups(path):
    """rollup_hourly and rollup_daily as they should be, summed in Python from request_log."""
    found = {"rollup_hourly": {}, "rollup_daily": {}}
    for start, route, path_id, method, status, bot, duration, size in query(path, """
            SELECT r.start_ms, r.route_id, r.path_id, r.method_id, r.http_status, u.is_bot, r.duration_us, r.body_size
            FROM request_log r LEFT JOIN user_agents u ON u.id = r.user_agent_id"""):
        hour = start // HOUR_MS
        key = (route or 0, 0 if route else path_id or 0, method or 0, (status or 0) // 100, 1 if bot else 0,
               bucket_of(duration))
        timed = duration is not None
        for table, unit in (("rollup_hourly", hour), ("rollup_daily", hour // 24)):
            sums = found[table].setdefault((unit,) + key, [0, 0, 0, None])
            sums[0] += 1
            sums[1] += size or 0
            sums[2] += duration if timed else 0
            if timed and (sums[3] is None or duration > sums[3]):
                sums[3] = duration
    return {table: {key + tuple(sums) for key, sums in rows.items()} for table, rows in found.items()}


def expected_visitors(path, unit_ms):
    """How many distinct (truncated address, agent) pairs request_log has per hour (3_600_000) or day."""
    return dict(query(path, f"""
        SELECT t, count(*) FROM (SELECT DISTINCT r.start_ms / {unit_ms} AS t, coalesce(ip.name, ''), coalesce(u.name, '')
        FROM request_log r LEFT JOIN client_ips ip ON ip.id = coalesce(r.forwarded_ip_id, r.client_ip_id)
        LEFT JOIN user_agents u ON u.id = r.user_agent_id) GROUP BY t"""))


def counted_visitors(path, table, unit):
    return dict(query(path, f"SELECT {unit}, count(DISTINCT visitor) FROM {table} GROUP BY {unit}"))


def starlette_app():
    async def item(request):
        return PlainTextResponse("x" * (int(request.path_params["id"]) % 50))

    async def create(request):
        return PlainTextResponse("made", status_code=201)

    async def user(request):
        name = request.path_params["name"]
        return PlainTextResponse("gone", status_code=503) if name.startswith("z") else PlainTextResponse(name)

    return Starlette(routes=[Route("/items/{id:int}", item), Route("/items", create, methods=["POST"]),
                             Route("/users/{name}", user)])


async def live_traffic(path, requests=900):
    """Log ``requests`` requests: three routes, a path no route matches (404), 2xx/4xx/5xx, GET and
    POST, a browser and two bots, from addresses in several /24 networks."""
    logged = AsgiLogToSqlite(starlette_app(), str(path))
    rng = random.Random(12)
    agents = [CHROME, GOOGLEBOT, CURL]
    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=logged, client=(f"10.0.{n}.{n * 7 % 250}", 4000)),
                                 base_url="http://test") for n in range(6)]
    try:
        for n in range(requests):
            client, agent = clients[n % len(clients)], agents[rng.randrange(3)]
            kind = rng.random()
            if kind < 0.5:
                await client.get(f"/items/{rng.randrange(1000)}", headers={"user-agent": agent})
            elif kind < 0.7:
                await client.post("/items", headers={"user-agent": agent})
            elif kind < 0.9:
                await client.get(f"/users/{rng.choice('abzq')}{n}", headers={"user-agent": agent})
            else:
                await client.get(f"/missing/{n % 7}", headers={"user-agent": agent})
    finally:
        for client in clients:
            await client.aclose()
    assert logged.close()


def lookup(conn, table, name):
    conn.execute(f"INSERT INTO {table} (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))
    return conn.execute(f"SELECT id FROM {table} WHERE name = ?", (name,)).fetchone()[0]


def write_rows(path, rows, rollup=None):
    """Insert (start_ms, duration_us or None, status, path, agent, address) rows in one transaction and
    roll them up with ``rollup`` (a Rollups), as the writer does with a batch."""
    rollup = rollup or Rollups()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        method = lookup(conn, "methods", "GET")
        values = [(start, duration, status, 100, method, lookup(conn, "paths", page),
                   lookup(conn, "user_agents", agent), lookup(conn, "client_ips", address))
                  for start, duration, status, page, agent, address in rows]
        first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM request_log").fetchone()[0]
        conn.executemany("INSERT INTO request_log (start_ms, duration_us, http_status, body_size, method_id, path_id, "
                         "user_agent_id, client_ip_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
        rollup.update(conn, first, first + len(values) - 1)
        conn.execute("COMMIT")
    finally:
        conn.close()


def new_log(tmp_path, name="log.db"):
    path = tmp_path / name
    asgi_log_to_sqlite.create_file(str(path))
    return path


def past_days(days=3, hours=(0, 5, 13, 23), per_hour=40):
    """Rows over several days before today, several hours each, in batches of one hour."""
    today = int(time.time() // DAY_S)
    rng = random.Random(3)
    batches = []
    for day in range(today - days - 1, today - 1):
        for hour in hours:
            start = (day * 24 + hour) * HOUR_MS
            batches.append([(start + rng.randrange(HOUR_MS), rng.choice([None, rng.randrange(1, 10 ** 6)]),
                             rng.choice([200, 200, 304, 404, 500, 0]), f"/p/{rng.randrange(5)}",
                             rng.choice([CHROME, CURL]), f"192.0.2.{rng.randrange(3)}") for _ in range(per_hour)])
    return batches


def nearest_rank(values, q):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


# ---- the writer keeps them ----------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_rollups_equal_the_raw_rows_after_live_logging(tmp_path):
    path = tmp_path / "log.db"
    await live_traffic(path)
    want = expected_rollups(path)
    assert snapshot(path)["rollup_hourly"] == want["rollup_hourly"]
    assert snapshot(path)["rollup_daily"] == want["rollup_daily"]
    assert query(path, "SELECT sum(hits), sum(bytes) FROM rollup_daily") == query(
        path, "SELECT count(*), sum(body_size) FROM request_log")
    # Routed rows are keyed by route, the 404s (no route) by path; both bot flags and three status classes.
    by_route = dict(query(path, "SELECT coalesce(rt.name, p.name), sum(hits) FROM rollup_hourly h "
                                "LEFT JOIN routes rt ON rt.id = h.route_id LEFT JOIN paths p ON p.id = h.path_id "
                                "GROUP BY 1"))
    assert set(by_route) == {"/items/{id:int}", "/items", "/users/{name}"} | {f"/missing/{n}" for n in range(7)}
    assert {row[0] for row in query(path, "SELECT DISTINCT is_bot FROM rollup_hourly")} == {0, 1}
    assert {row[0] for row in query(path, "SELECT DISTINCT status_class FROM rollup_hourly")} == {2, 4, 5}
    assert query(path, "SELECT count(*) FROM rollup_batch") == [(0,)]
    # Visitors: six /24 networks times three agents, counted exactly.
    assert counted_visitors(path, "rollup_visitors_daily", "day") == expected_visitors(path, DAY_S * 1000)
    assert sum(expected_visitors(path, DAY_S * 1000).values()) == 18
    assert counted_visitors(path, "rollup_visitors_hourly", "hour") == expected_visitors(path, HOUR_MS)


def test_rows_of_many_hours_and_days_and_without_durations(tmp_path):
    path = new_log(tmp_path)
    for batch in past_days():
        write_rows(path, batch)
    # One batch spanning two days: each row still goes to its own hour and day.
    write_rows(path, [row for batch in past_days(hours=(23,), per_hour=5) + past_days(hours=(0,), per_hour=5)
                      for row in batch])
    want = expected_rollups(path)
    assert snapshot(path)["rollup_hourly"] == want["rollup_hourly"]
    assert snapshot(path)["rollup_daily"] == want["rollup_daily"]
    untimed = query(path, "SELECT sum(hits), sum(duration_us_sum), max(duration_us_max) FROM rollup_hourly "
                          "WHERE bucket = -1")
    assert untimed[0][0] == query(path, "SELECT count(*) FROM request_log WHERE duration_us IS NULL")[0][0] > 0
    assert untimed[0][1:] == (0, None)


class _Route:
    def __init__(self, path):
        self.path = path


_records = st.lists(st.tuples(
    st.sampled_from(["GET", "GET", "HEAD", "POST"]),
    st.sampled_from(["/", "/a", "/b/1", "/b/2"]),
    st.sampled_from([None, None, "/b/{n}"]),
    st.sampled_from([None, CHROME, GOOGLEBOT]),
    st.one_of(st.none(), st.sampled_from([200, 204, 301, 304, 404, 418, 500, 503])),
    st.sampled_from([0, 0, 0, FLAG_EXCEPTION, FLAG_DISCONNECTED, FLAG_WEBSOCKET]),
    st.floats(0, 3 * 86_400),                                  # start, seconds into the three days
    st.one_of(st.floats(0, 0.001), st.floats(0, 100)),         # duration, seconds
    st.integers(0, 1 << 40),                                   # body size
), min_size=1, max_size=60)


def test_the_writers_tally_equals_the_rollups_summed_from_its_rows(tmp_path):
    """The writer sums each batch's rollup groups in Python as it shapes the rows (RollupTally):
    for any records, what it adds must be what the SQL over the rows written would add."""
    from asgi_log_to_sqlite.writer import Writer

    seen = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batches=st.lists(_records, min_size=1, max_size=3))
    def tallied(batches):
        path = tmp_path / f"log-{len(seen)}.db"
        seen.append(path)
        writer = Writer(str(path))
        try:
            shaper = Shaper()
            for batch in batches:
                records = []
                for method, page, route, agent, status, flags, start, duration, size in batch:
                    scope = {"type": "websocket" if flags & FLAG_WEBSOCKET else "http", "method": method,
                             "path": page, "query_string": b"", "client": ("192.0.2.1", 5000),
                             "headers": [(b"user-agent", agent.encode())] if agent else []}
                    if route is not None:
                        scope["route"] = _Route(route)
                    records.append((shaper, scope, start, start + duration, None, status,
                                    [(b"content-type", b"text/plain")], size, 0, flags))
                assert writer._write(records, 1.7e9) is None
            # Its sums are added every few seconds: now, and from the tally, not the raw rows.
            assert writer._add_tally() or writer.rows_written == 0
        finally:
            writer._conn.close()
        want = expected_rollups(path)
        found = snapshot(path)  # the site's totals checked against the detail there
        assert found["rollup_hourly"] == want["rollup_hourly"]
        assert found["rollup_daily"] == want["rollup_daily"]

    tallied()


def test_percentiles_from_buckets_are_within_ten_percent_of_exact(tmp_path):
    path = new_log(tmp_path)
    rng = random.Random(7)
    start = int(time.time() * 1000) - 2 * HOUR_MS
    shapes = {
        "lognormal": lambda: int(rng.lognormvariate(math.log(3000), 1.2)),
        # Most requests fast, a slow tail of seconds: where a mean hides what a p99 shows.
        "skewed": lambda: rng.randrange(200, 900) if rng.random() < 0.9 else rng.randrange(100_000, 5_000_000),
        "bimodal": lambda: rng.choice([rng.randrange(1_000, 1_300), rng.randrange(40_000, 90_000)]),
    }
    for n, (name, draw) in enumerate(shapes.items()):
        durations = [draw() for _ in range(5_000)]
        for chunk in range(0, len(durations), 1_000):
            write_rows(path, [(start + n * HOUR_MS + i, d, 200, f"/{name}", CHROME, "192.0.2.0")
                              for i, d in enumerate(durations[chunk:chunk + 1_000])])
        since, until = start + n * HOUR_MS, start + (n + 1) * HOUR_MS
        conn = sqlite3.connect(path)
        try:
            found = percentiles(conn, since, until, (0.5, 0.95, 0.99))
        finally:
            conn.close()
        for q, value in found.items():
            exact = nearest_rank(durations, q)
            assert abs(value - exact) <= 0.10 * exact, (name, q, value, exact)
            # The documented bound: within 4.4% of d + 1 µs.
            assert abs(value - exact) <= 0.0443 * (exact + 1), (name, q, value, exact)


@pytest.mark.asyncio
async def test_live_percentiles_match_the_raw_durations(tmp_path):
    path = tmp_path / "log.db"
    rng = random.Random(5)

    async def app(scope, receive, send):
        if scope["type"] == "http" and rng.random() < 0.1:
            await asyncio.sleep(rng.choice([0.002, 0.01]))
        await ok(scope, receive, send)

    logged = AsgiLogToSqlite(app, str(path))
    await serve(logged, [scope_for(f"/{n % 3}", agent=CHROME.encode()) for n in range(600)])
    assert logged.close()
    durations = [d for (d,) in query(path, "SELECT duration_us FROM request_log")]
    conn = sqlite3.connect(path)
    try:
        found = percentiles(conn)
        bots, humans = percentiles(conn, is_bot=True), percentiles(conn, is_bot=False)
    finally:
        conn.close()
    for q, value in found.items():
        assert abs(value - nearest_rank(durations, q)) <= 0.10 * nearest_rank(durations, q) + 1
    assert bots == {0.5: None, 0.95: None, 0.99: None} and humans == found


def test_percentiles_refuses_a_quantile_outside_0_1(tmp_path):
    path = new_log(tmp_path)
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(ValueError, match=r"quantile 95: expected a fraction in \(0, 1\], for example 0.95"):
            percentiles(conn, quantiles=(95,))
    finally:
        conn.close()


# ---- pruning and rebuilding -------------------------------------------------------------------------

def test_deleting_raw_rows_leaves_the_rollups_and_rebuild_keeps_pruned_hours(tmp_path):
    path = new_log(tmp_path)
    for batch in past_days():
        write_rows(path, batch)
    before = snapshot(path)
    conn = sqlite3.connect(path)
    try:
        p95 = percentiles(conn)
    finally:
        conn.close()
    first_day = query(path, "SELECT min(start_ms) / 86400000 FROM request_log")[0][0]
    second_hour = query(path, "SELECT min(start_ms) / 3600000 FROM request_log WHERE start_ms >= ?",
                        ((first_day + 1) * DAY_S * 1000,))[0][0]
    conn = sqlite3.connect(path)
    with conn:
        # As retention prunes: the oldest day whole, then half of the next day's first hour.
        conn.execute("DELETE FROM request_log WHERE start_ms < ?", ((first_day + 1) * DAY_S * 1000,))
        conn.execute("DELETE FROM request_log WHERE id IN (SELECT id FROM request_log WHERE start_ms / 3600000 = ? "
                     "ORDER BY id LIMIT 20)", (second_hour,))
    conn.close()
    assert snapshot(path) == before
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert percentiles(conn) == p95
        seen = []
        rebuilt = Rollups().rebuild(conn, progress=lambda done, total: seen.append((done, total)))
        assert percentiles(conn) == p95
    finally:
        conn.close()
    assert snapshot(path) == before
    assert seen[-1] == (query(path, "SELECT count(*) FROM request_log")[0][0],) * 2
    assert [(day["hours_rebuilt"], day["hours_partly_pruned"], day["visitors"]) for day in rebuilt] == [
        (3, 1, "kept (salt deleted)"), (4, 0, "kept (salt deleted)")]
    assert rollups.day_text(first_day) not in {day["day"] for day in rebuilt}


@pytest.mark.asyncio
async def test_rebuild_gives_the_same_tables_and_follows_a_corrected_bot_flag(tmp_path):
    path = tmp_path / "log.db"
    await live_traffic(path, requests=400)
    before = snapshot(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        [day] = Rollups().rebuild(conn)
        assert snapshot(path) == before
        assert (day["hours_partly_pruned"], day["visitors"]) == (0, "rebuilt")
        # A correction made by hand: Chrome is counted as a bot from now on, and the rebuild follows it.
        conn.execute("UPDATE user_agents SET is_bot = 1 WHERE name = ?", (CHROME,))
        Rollups().rebuild(conn)
    finally:
        conn.close()
    assert query(path, "SELECT DISTINCT is_bot FROM rollup_hourly") == [(1,)]
    assert snapshot(path)["rollup_hourly"] == expected_rollups(path)["rollup_hourly"]
    assert query(path, "SELECT DISTINCT is_bot FROM rollup_visitors_daily") == [(1,)]
    assert counted_visitors(path, "rollup_visitors_daily", "day") == expected_visitors(path, DAY_S * 1000)


def test_rebuild_fills_rollups_for_rows_written_without_them(tmp_path):
    path = new_log(tmp_path)
    for batch in past_days(days=1):
        write_rows(path, batch)
    want = snapshot(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for table in ("rollup_hourly", "rollup_daily"):
            conn.execute(f"DELETE FROM {table}")   # rows from before rollups, as a version 1 file has
        Rollups().rebuild(conn)
    finally:
        conn.close()
    assert snapshot(path) == want


def test_rebuild_needs_a_connection_without_a_transaction(tmp_path):
    path = new_log(tmp_path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        with pytest.raises(ValueError, match="rebuild needs a connection with no transaction open"):
            Rollups().rebuild(conn)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


# Few values, so that a combination comes back within the hour and in the next.
def test_a_writer_whose_tallies_keep_missing_still_keeps_the_mark_up(tmp_path, monkeypatch):
    """Another process's rows between each of a writer's batches spend its tally every time: what it
    sums from the raw rows instead must outpace what it writes, or the mark would fall ever further behind."""
    from asgi_log_to_sqlite.writer import Writer

    monkeypatch.setattr(rollups, "ROLLUP_EVERY_S", 0.0)  # the tally is added with every batch
    path = str(tmp_path / "log.db")
    writer = Writer(path, batch_size=8_000)
    shaper = Shaper()
    try:
        for _ in range(4):
            now = time.perf_counter()
            records = [(shaper, scope_for(f"/p/{i % 30}"), now, now + 0.001, None, 200, [], 10, 0, 0)
                       for i in range(8_000)]  # more rows than rollups.SLICE_ROWS
            assert writer._write(records, time.time() - time.perf_counter()) is None
            # Another process's row after it: the next tally's rows are not the next above the mark.
            writer._conn.execute("INSERT INTO request_log (start_ms, http_status, path_id) VALUES (?, 200, 1)",
                                 (int(time.time() * 1000),))
            assert rollups.WATERMARK.behind(writer._conn) == 1  # that row only
        now = time.perf_counter()
        assert writer._write([(shaper, scope_for("/p/0"), now, now + 0.001, None, 200, [], 10, 0, 0)],
                             time.time() - time.perf_counter()) is None
        assert rollups.WATERMARK.behind(writer._conn) == 0
    finally:
        writer._conn.close()
    assert snapshot(path)["rollup_hourly"] == expected_rollups(path)["rollup_hourly"]


_visits = st.lists(st.tuples(
    st.sampled_from(["/", "/", "/", "/a"]),
    st.sampled_from([CHROME, CHROME, GOOGLEBOT, None]),
    st.sampled_from(["192.0.2.1", "192.0.2.1", "198.51.100.7", "2001:db8::1", None]),
    st.sampled_from([None, None, "203.0.113.9", "garbage"]),  # X-Forwarded-For
    st.sampled_from([0, 0, 0, 0, 0, FLAG_WEBSOCKET]),
    st.sampled_from([0, 10, 3590, 3610, 7000]),                # start, seconds before now
), min_size=1, max_size=60)


def expected_visits(path):
    """Each (hour, bot flag, visitor hash) that request_log's rows make, hashed with the file's salts."""
    salts = dict(query(path, "SELECT day, salt FROM rollup_salts"))
    return {(hour, bot, rollups.visitor_hash(salts[hour // 24], address, agent))
            for hour, address, agent, bot in query(path, f"""
        SELECT DISTINCT r.start_ms / {HOUR_MS}, coalesce(ip.name, ''), coalesce(u.name, ''), coalesce(u.is_bot, 0) != 0
        FROM request_log r LEFT JOIN client_ips ip ON ip.id = coalesce(r.forwarded_ip_id, r.client_ip_id)
        LEFT JOIN user_agents u ON u.id = r.user_agent_id""")}


def test_the_writers_visitors_equal_those_of_its_rows(tmp_path):
    """The writer tallies a visit once an hour per cached combination of values: for any records,
    with or without a trusted proxy, the visitor sets must hold the distinct (hour, address, agent)
    of the rows written, as rollups._VISITS reads them from request_log."""
    from asgi_log_to_sqlite.writer import Writer

    seen = []

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batches=st.lists(_visits, min_size=1, max_size=3), proxied=st.booleans())
    def visited(batches, proxied):
        path = tmp_path / f"log-{len(seen)}.db"
        seen.append(path)
        writer = Writer(str(path))
        shaper = Shaper(trusted_proxies=["192.0.2.0/24"] if proxied else ())
        now = time.time()
        try:
            for batch in batches:
                records = []
                for page, agent, client, forwarded, flags, before in batch:
                    headers = [(b"user-agent", agent.encode())] if agent else []
                    if forwarded:
                        headers.append((b"x-forwarded-for", forwarded.encode()))
                    scope = {"type": "websocket" if flags else "http", "method": "GET", "path": page,
                             "query_string": b"", "client": (client, 5000) if client else None, "headers": headers}
                    start = now - before - time.time() + time.perf_counter()
                    records.append((shaper, scope, start, start + 0.001, None, 200, [], 3, 0, flags))
                assert writer._write(records, time.time() - time.perf_counter()) is None
        finally:
            writer._conn.close()
        assert set(query(path, "SELECT hour, is_bot, visitor FROM rollup_visitors_hourly")) == expected_visits(path)

    visited()


# ---- visitors and salts ----------------------------------------------------------------------------------

VISITOR_SCRIPT = r"""
import asyncio, sys
from asgi_log_to_sqlite import AsgiLogToSqlite
from conftest import ok, serve

path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
agents = [b"agent-one", b"agent-two", b"agent-three"]

def scope(n):
    # Two hosts in each /24 network: truncated, they are one visitor per agent.
    address = f"10.1.{n % 10}.{1 + n % 2}"
    headers = [(b"host", b"test"), (b"user-agent", agents[n % 3])]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": f"/{n}", "raw_path": None, "query_string": b"", "root_path": "", "headers": headers,
            "client": (address, 5000), "server": ("127.0.0.1", 8000)}

async def main():
    app = AsgiLogToSqlite(ok, path, batch_size=50)
    await serve(app, [scope(n) for n in range(first, last) for _ in range(3)])
    assert app.close()

asyncio.run(main())
"""


def test_two_processes_logging_to_one_file_count_visitors_exactly(tmp_path):
    path = tmp_path / "log.db"
    script = tmp_path / "visit.py"
    script.write_text(VISITOR_SCRIPT)
    # Overlapping ranges: visitors 0..39 and 20..59 (n modulo 10 networks x 3 agents = 30 in all).
    processes = [subprocess.Popen([sys.executable, str(script), str(path), first, last], env=subprocess_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for first, last in (("0", "600"), ("300", "900"))]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    assert query(path, "SELECT count(*) FROM request_log") == [(2 * 600 * 3,)]
    assert sum(expected_visitors(path, DAY_S * 1000).values()) in (30, 60)  # 60 only across midnight
    assert counted_visitors(path, "rollup_visitors_daily", "day") == expected_visitors(path, DAY_S * 1000)
    assert counted_visitors(path, "rollup_visitors_hourly", "hour") == expected_visitors(path, HOUR_MS)
    assert query(path, "SELECT count(*) FROM rollup_salts")[0][0] in (1, 2)


@pytest.mark.asyncio
async def test_a_days_salt_is_gone_once_the_day_is_over(tmp_path):
    path = new_log(tmp_path)
    today = int(time.time() // DAY_S)
    conn = sqlite3.connect(path)
    with conn:
        for day in (today - 3, today - 1):
            conn.execute("INSERT INTO rollup_salts (day, salt) VALUES (?, randomblob(16))", (day,))
            conn.execute("INSERT INTO rollup_visitors_daily (day, is_bot, visitor) VALUES (?, 0, 42)", (day,))
    conn.close()
    if time.time() - today * DAY_S < SALT_GRACE_S:
        pytest.skip("yesterday's salt is kept for the first minutes of a day")
    logged = AsgiLogToSqlite(ok, str(path))
    await serve(logged, [scope_for("/")])
    assert logged.close()
    assert query(path, "SELECT day FROM rollup_salts") == [(today,)]
    # The counts of those days stay; who their visitors were cannot be found again.
    assert query(path, "SELECT day FROM rollup_visitors_daily WHERE visitor = 42 ORDER BY day") == [
        (today - 3,), (today - 1,)]


def test_a_salt_outlives_its_day_by_the_grace_only(tmp_path):
    path = new_log(tmp_path)
    midnight = 20_000 * DAY_S
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("INSERT INTO rollup_salts (day, salt) VALUES (19999, randomblob(16))")
        assert Rollups(clock=lambda: midnight + SALT_GRACE_S - 1).expire_salts(conn) == 0
        assert Rollups(clock=lambda: midnight + SALT_GRACE_S).expire_salts(conn) == 1
        # A row of a day that is over makes no salt, and adds no visitor...
        start = (19_999 * 24 + 3) * HOUR_MS
        conn.close()
        write_rows(path, [(start, 10, 200, "/", CHROME, "192.0.2.0")], Rollups(clock=lambda: midnight + 3600))
        assert query(path, "SELECT count(*) FROM rollup_salts") == [(0,)]
        assert query(path, "SELECT count(*) FROM rollup_visitors_daily") == [(0,)]
        # ...unless it is an import that asks for visitors of closed days: a salt in memory only.
        write_rows(path, [(start + 1, 10, 200, "/", CHROME, "192.0.2.0"), (start + 2, 10, 200, "/", CURL, "192.0.2.0")],
                   Rollups(clock=lambda: midnight + 3600, visitors_of_closed_days=True))
        assert query(path, "SELECT count(*) FROM rollup_salts") == [(0,)]
        assert query(path, "SELECT day, count(*) FROM rollup_visitors_daily GROUP BY day") == [(19_999, 2)]
    finally:
        conn.close()


def test_a_batch_of_closed_days_skips_visitors_but_still_expires_salts(tmp_path):
    path = new_log(tmp_path)
    midnight = 20_000 * DAY_S
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO rollup_salts (day, salt) VALUES (19999, randomblob(16))")
    conn.close()
    # An import of a day long over, written after yesterday's grace: no visitor, yet yesterday's salt goes.
    start = (19_990 * 24 + 3) * HOUR_MS
    write_rows(path, [(start, 10, 200, "/", CHROME, "192.0.2.0")], Rollups(clock=lambda: midnight + SALT_GRACE_S))
    assert query(path, "SELECT count(*) FROM rollup_salts") == [(0,)]
    assert query(path, "SELECT count(*) FROM rollup_visitors_hourly") == [(0,)]
    assert query(path, "SELECT day, hits FROM rollup_daily") == [(19_990, 1)]


def test_visitor_hashes_agree_across_files_that_share_a_salt(tmp_path):
    salt = bytes(range(16))
    assert rollups.visitor_hash(salt, "10.0.0.0", CHROME) == rollups.visitor_hash(salt, "10.0.0.0", CHROME)
    assert rollups.visitor_hash(salt, "10.0.0.0", CHROME) != rollups.visitor_hash(bytes(16), "10.0.0.0", CHROME)
    assert rollups.visitor_hash(salt, "10.0.0.0", CHROME) != rollups.visitor_hash(salt, "10.0.1.0", CHROME)


# ---- merging ------------------------------------------------------------------------------------------

def merge(destination, source):
    """Merge the rollups of ``source`` into ``destination`` as the merge command does: values first, then ids mapped."""
    conn = sqlite3.connect(destination, isolation_level=None)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (str(source),))
        conn.execute("BEGIN IMMEDIATE")
        maps = {}
        for lookup in rollups.REFERENCES:
            conn.execute(f"INSERT INTO main.{lookup} (name) SELECT name FROM src.{lookup} WHERE true "
                         f"ON CONFLICT (name) DO NOTHING")
            conn.execute(f"CREATE TEMP TABLE map_{lookup} AS SELECT s.id AS old_id, m.id AS new_id "
                         f"FROM src.{lookup} s JOIN main.{lookup} m ON m.name = s.name")
            maps[lookup] = f"temp.map_{lookup}"
        merged = rollups.merge_from(conn, "src", maps)
        conn.execute("COMMIT")
        for lookup in rollups.REFERENCES:
            conn.execute(f"DROP TABLE temp.map_{lookup}")
        conn.execute("DETACH DATABASE src")
        return merged
    finally:
        conn.close()


def named_totals(*paths):
    """Each file's rollup_hourly and rollup_daily by names (ids differ between files), added up."""
    totals = {}
    for path in paths:
        for table, unit in (("rollup_hourly", "hour"), ("rollup_daily", "day")):
            for row in query(path, f"""
                    SELECT {unit}, rt.name, p.name, m.name, status_class, is_bot, bucket, hits, bytes,
                           duration_us_sum, duration_us_max
                    FROM {table} t LEFT JOIN routes rt ON rt.id = t.route_id LEFT JOIN paths p ON p.id = t.path_id
                    LEFT JOIN methods m ON m.id = t.method_id"""):
                key, (hits, size, total, longest) = (table,) + row[:7], row[7:]
                old = totals.get(key, (0, 0, 0, None))
                totals[key] = (old[0] + hits, old[1] + size, old[2] + total,
                               longest if old[3] is None else max(old[3], longest) if longest is not None else old[3])
    return totals


def visitor_sets(path):
    return set(query(path, "SELECT day, visitor FROM rollup_visitors_daily"))


@pytest.mark.asyncio
async def test_merge_from_adds_totals_and_unites_visitors(tmp_path):
    a, b = new_log(tmp_path, "a.db"), new_log(tmp_path, "b.db")
    today = int(time.time() // DAY_S)
    for path in (a, b):
        # Files that share a salt (one made by merging the other, say) recognise the same visitor.
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("INSERT INTO rollup_salts (day, salt) VALUES (?, ?)", (today, bytes(range(16))))
        conn.close()
    await live_traffic(a, requests=300)
    for batch in past_days(days=2):
        write_rows(b, batch)
    await live_traffic(b, requests=200)
    merged = new_log(tmp_path, "merged.db")
    counts = merge(merged, a)
    merge(merged, b)
    assert counts["rollup_hourly"] > 0 and counts["rollup_visitors_daily"] > 0
    assert named_totals(merged) == named_totals(a, b)
    assert query(merged, "SELECT sum(hits) FROM rollup_daily") == [(300 + 200 + 2 * 4 * 40,)]
    # Both files saw the same six networks and three agents: the union counts each visitor once.
    assert visitor_sets(merged) == visitor_sets(a) | visitor_sets(b)
    assert counted_visitors(merged, "rollup_visitors_daily", "day")[today] == 18 < len(visitor_sets(a)) + len(
        visitor_sets(b))
    # The open day's salt came along, so visitors logged into the merged file are recognised too.
    assert query(merged, "SELECT salt FROM rollup_salts") == [(bytes(range(16)),)]


def test_merge_from_keeps_the_site_totals_of_hours_whose_detail_was_pruned(tmp_path):
    # Past its size budget retention deletes a file's detailed hourly rollups before its site totals.
    source = new_log(tmp_path, "source.db")
    for batch in past_days(days=2):
        write_rows(source, batch)
    want = query(source, "SELECT hour, sum(hits) FROM rollup_traffic_hourly GROUP BY hour ORDER BY hour")
    conn = sqlite3.connect(source)
    with conn:
        conn.execute("DELETE FROM rollup_hourly")
    conn.close()
    merged = new_log(tmp_path, "merged.db")
    merge(merged, source)
    assert query(merged, "SELECT hour, sum(hits) FROM rollup_traffic_hourly GROUP BY hour ORDER BY hour") == want
    assert sum(hits for _, hits in want) == 2 * 4 * 40


@pytest.mark.asyncio
async def test_files_with_different_salts_cannot_recognise_the_same_visitor(tmp_path):
    # The cross-host caveat: each host's file made its own salt, so a visitor of both counts twice.
    a, b = tmp_path / "host-a.db", tmp_path / "host-b.db"
    await live_traffic(a, requests=100)
    await live_traffic(b, requests=100)
    merged = new_log(tmp_path, "merged.db")
    merge(merged, a)
    merge(merged, b)
    assert len(visitor_sets(merged)) == len(visitor_sets(a)) + len(visitor_sets(b))


def test_merge_from_names_a_missing_id_map(tmp_path):
    a, merged = new_log(tmp_path, "a.db"), new_log(tmp_path, "merged.db")
    conn = sqlite3.connect(merged, isolation_level=None)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (str(a),))
        with pytest.raises(ValueError, match=r"id_maps has no 'methods': expected a table of \(old_id, new_id\)"):
            rollups.merge_from(conn, "src", {"paths": "temp.map_paths", "routes": "temp.map_routes"})
        with pytest.raises(ValueError, match=r"schema='src; drop': expected a plain name"):
            rollups.merge_from(conn, "src; drop", {})
    finally:
        conn.close()


# ---- the command ----------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_rollup_command_shows_days_and_rebuilds(tmp_path):
    path = tmp_path / "log.db"
    await live_traffic(path, requests=120)
    for batch in past_days(days=1):
        write_rows(path, batch)
    runner = CliRunner()
    shown = runner.invoke(cli, ["rollup", str(path), "--json"])
    assert shown.exit_code == 0, shown.output
    days = json.loads(shown.stdout)
    assert [(d["hits"], d["raw_rows"], d["salt"]) for d in days] == [(160, 160, "deleted"), (120, 120, "kept")]
    assert days[-1]["visitors"] == 18
    table = runner.invoke(cli, ["rollup", str(path)])
    assert table.output.splitlines()[0].split() == ["day", "hours", "hits", "raw_rows", "visitors", "salt"]
    before = snapshot(path)
    rebuilt = runner.invoke(cli, ["rollup", str(path), "--rebuild", "--json"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert [d["visitors"] for d in json.loads(rebuilt.stdout)] == ["kept (salt deleted)", "rebuilt"]
    assert snapshot(path) == before


def test_rollup_command_errors_are_one_line(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli, ["rollup", str(tmp_path / "none.db")])
    assert missing.exit_code == 1 and missing.output == f"Error: {tmp_path / 'none.db'}: no such file\n"
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).close()
    refused = runner.invoke(cli, ["rollup", str(plain), "--rebuild"])
    assert refused.exit_code == 1 and "not a request log" in refused.output

