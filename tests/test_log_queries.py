"""The ready-made queries (asgi_log_to_sqlite.datasette.queries), run with sqlite3 on a real log.

The log is written by the real middleware in front of a Starlette app (whose router gives route
templates), through httpx.ASGITransport: traffic now, some three days ago and some ten days ago
(the wall clock patched while it is logged). Every query's numbers are checked against what was
sent, with the parameters as Datasette passes them: text, '' where the form was left blank.
"""
import asyncio
import math
import shutil
import sqlite3
import time
from unittest import mock

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_log_to_sqlite import AsgiLogToSqlite, rollups, route_summaries, toplists
from asgi_log_to_sqlite.cli import cli
from asgi_log_to_sqlite.datasette.queries import QUERIES
from asgi_log_to_sqlite.rollups import bucket_of, bucket_value

DAY_S = 86_400
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CURL = "curl/8.5.0"
GOOGLE = "https://www.google.com/"
NEWS = "https://news.example.org/story/7"
ITEMS = "/items/{item_id:int}"
USERS = "/users/{name}"
BLANK = {"start": "", "end": "", "path_prefix": ""}

# (method, path, agent, referer, client address, times). NOW is logged now; OLD three days ago;
# ANCIENT ten days ago, outside the default range of 7 days.
NOW = [
    ("GET", "/items/1", CHROME, GOOGLE, "10.0.1.5", 6),  # 200, body of 10 bytes each
    ("GET", "/items/2", CHROME, NEWS, "10.0.1.6", 4),  # 200, 20 bytes
    ("GET", "/items/3", CHROME, None, "10.0.2.9", 2),  # 200, 30 bytes
    ("GET", "/users/ann", GOOGLEBOT, None, "192.0.2.1", 3),  # 200, 3 bytes
    ("GET", "/users/zed", GOOGLEBOT, None, "192.0.2.1", 2),  # 503, 4 bytes ("gone")
    ("GET", "/missing/page", CURL, None, "192.0.2.7", 3),  # 404 from Starlette, no route
    ("POST", "/items", CHROME, GOOGLE, "10.0.1.5", 2),  # 201, 4 bytes ("made")
]
OLD = [("GET", "/items/1", CHROME, None, "10.0.1.5", 5), ("GET", "/old/page", CURL, None, "192.0.2.7", 1)]
ANCIENT = [("GET", "/items/9", CHROME, None, "10.0.1.5", 2)]
NOW_ROWS = sum(times for *_, times in NOW)  # 22
OLD_ROWS = sum(times for *_, times in OLD)  # 6


def body(path):
    if path.startswith("/items/"):
        return 10 * int(path.rsplit("/", 1)[1])
    return {"/users/ann": 3, "/users/zed": 4, "/items": 4}.get(path, len("Not Found"))


def starlette_app():
    async def item(request):
        # Milliseconds apart, so that percentiles fall in buckets far wider than their rounding.
        await asyncio.sleep(0.002 * request.path_params["item_id"])
        return PlainTextResponse("x" * (10 * request.path_params["item_id"]))

    async def create(request):
        return PlainTextResponse("made", status_code=201)

    async def user(request):
        name = request.path_params["name"]
        return PlainTextResponse("gone", status_code=503) if name.startswith("z") else PlainTextResponse(name)

    return Starlette(routes=[Route(ITEMS, item), Route("/items", create, methods=["POST"]), Route(USERS, user)])


async def send_traffic(path, traffic):
    logged = AsgiLogToSqlite(starlette_app(), str(path))
    clients = {}
    try:
        for method, page, agent, referer, address, times in traffic:
            if address not in clients:
                clients[address] = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=logged, client=(address, 4000)), base_url="http://test")
            headers = {"user-agent": agent, **({"referer": referer} if referer else {})}
            for _ in range(times):
                response = await clients[address].request(method, page, headers=headers)
                assert response.status_code in (200, 201, 404, 503)
    finally:
        for client in clients.values():
            await client.aclose()
    assert logged.close()


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    path = tmp_path_factory.mktemp("queries") / "filled.db"
    real = time.time
    for days, traffic in ((10, ANCIENT), (3, OLD)):
        with mock.patch("time.time", lambda: real() - days * DAY_S):
            asyncio.run(send_traffic(path, traffic))
    asyncio.run(send_traffic(path, NOW))
    return path


@pytest.fixture
def log(filled, tmp_path):
    """A copy of the filled log, for a test to read or change."""
    path = tmp_path / "requests.db"
    shutil.copy(filled, path)
    return path


def run(path, name, **params):
    """Rows of query ``name`` as dicts, its parameters blank unless given, as Datasette sends them."""
    query = QUERIES[name]
    values = {key: params.pop(key, "") for key in query["params"]}
    assert not params, f"{name} takes no {sorted(params)}"
    conn = sqlite3.connect(path)
    try:
        cursor = conn.execute(query["sql"], values)
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]
    finally:
        conn.close()


def by(rows, column):
    return {row[column]: row for row in rows}


def day_of(seconds_ago=0):
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() - seconds_ago))


def raw(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def ms_close(found, expected):
    """Percentiles in ms equal, but for the last digit: SQLite's round() and Python's may differ at a 5."""
    assert found == pytest.approx(expected, abs=0.0101)


def expected_quantiles(durations):
    """p50, p95, p99 in ms as the rollups give them: the bucket of the nearest rank, capped at its longest."""
    ordered = sorted(durations)
    found = []
    for q in (0.5, 0.95, 0.99):
        value = ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]
        longest = max(d for d in ordered if bucket_of(d) == bucket_of(value))
        found.append(min(bucket_value(bucket_of(value)), longest) / 1000.0)
    return found


# ---- each query's numbers ----------------------------------------------------------------------
# One check per query, run on the default range (the last 7 days: NOW and OLD, not ANCIENT).

def check_summary(path):
    (row,) = run(path, "summary")
    assert row["requests"] == NOW_ROWS + OLD_ROWS
    assert row["bots"] == 3 + 2 + 3 + 1 and row["people"] == row["requests"] - row["bots"]
    assert (row["client_errors"], row["server_errors"]) == (3 + 1, 2)
    assert row["server_error_percent"] == round(100 * 2 / row["requests"], 2)
    assert row["bytes"] == sum(body(page) * times for _, page, *_, times in NOW + OLD)
    conn = sqlite3.connect(path)
    try:
        start_ms = int(time.time() * 1000) - 7 * DAY_S * 1000
        found = rollups.percentiles(conn, start_ms, None, (0.5, 0.95, 0.99))
    finally:
        conn.close()
    ms_close([row["p50_ms"], row["p95_ms"], row["p99_ms"]], [found[q] / 1000 for q in (0.5, 0.95, 0.99)])
    assert row["p99_ms"] > 4  # /items/3 and the three-day-old /items/1 took milliseconds
    assert row["end"].startswith(day_of()) and row["start"].startswith(day_of(7 * DAY_S))


def check_traffic_by_hour(path):
    rows = run(path, "traffic_by_hour")
    assert sum(row["requests"] for row in rows) == NOW_ROWS + OLD_ROWS
    assert sum(row["bots"] for row in rows) == 9 and sum(row["server_errors"] for row in rows) == 2
    # Every hour from OLD's to now, quiet ones as zeros: about 72 of them, each an ISO hour.
    assert 3 * 24 - 1 <= len(rows) <= 3 * 24 + 2
    assert sum(row["requests"] == 0 for row in rows) == len(rows) - sum(row["requests"] > 0 for row in rows)
    assert all(row["hour"].endswith(":00Z") and row["hour"][10] == "T" for row in rows)
    assert rows[-1]["hour"][:13] == time.strftime("%Y-%m-%dT%H", time.gmtime())
    assert rows[0]["requests"] >= 1 and rows[0]["hour"][:10] == day_of(3 * DAY_S)


def check_traffic_by_day(path):
    rows = run(path, "traffic_by_day")
    assert [row["day"] for row in rows] == [day_of(days * DAY_S) for days in (3, 2, 1, 0)]
    assert [row["requests"] for row in rows] == [OLD_ROWS, 0, 0, NOW_ROWS]
    assert (rows[0]["bots"], rows[0]["client_errors"]) == (1, 1)
    assert (rows[-1]["people"], rows[-1]["bots"], rows[-1]["server_errors"]) == (14, 8, 2)
    assert rows[-1]["bytes"] == sum(body(page) * times for _, page, *_, times in NOW)


def check_top_routes(path):
    rows = run(path, "top_routes")
    assert [(row["route"], row["kind"], row["requests"]) for row in rows] == [
        (ITEMS, "route", 6 + 4 + 2 + 5), (USERS, "route", 5), ("/missing/page", "path", 3), ("/items", "route", 2),
        ("/old/page", "path", 1)]
    assert by(rows, "route")[USERS]["server_errors"] == 2 and by(rows, "route")[USERS]["bots"] == 5
    assert sum(row["percent"] for row in rows) == pytest.approx(100, abs=0.05)


def check_top_paths(path):
    rows = run(path, "top_paths")
    assert [(row["path"], row["requests"]) for row in rows[:3]] == [("/items/1", 11), ("/items/2", 4),
                                                                    ("/missing/page", 3)]
    assert by(rows, "path")["/users/zed"]["server_errors"] == 2 and by(rows, "path")["/items/2"]["bytes"] == 80
    assert "/items/9" not in by(rows, "path")  # ten days old


def check_error_paths(path):
    rows = run(path, "error_paths")
    assert [(row["route"], row["client_errors"], row["server_errors"]) for row in rows] == [
        ("/missing/page", 3, 0), (USERS, 0, 2), ("/old/page", 1, 0)]
    assert by(rows, "route")[USERS]["error_percent"] == 40.0


def check_slowest_routes(path):
    rows = run(path, "slowest_routes")
    assert {row["route"] for row in rows} == {ITEMS, USERS, "/missing/page", "/items", "/old/page"}
    assert [row["p95_ms"] for row in rows] == sorted((row["p95_ms"] for row in rows), reverse=True)
    route_id = raw(path, "SELECT id FROM routes WHERE name = ?", (ITEMS,))[0][0]
    durations = [d for (d,) in raw(path, "SELECT duration_us FROM request_log WHERE route_id = ? AND start_ms >= ?",
                                   (route_id, int(time.time() - 7 * DAY_S) * 1000))]
    items = by(rows, "route")[ITEMS]
    assert len(durations) == items["requests"] == 17
    ms_close([items["p50_ms"], items["p95_ms"], items["p99_ms"]], expected_quantiles(durations))
    assert 2 <= items["p50_ms"] < items["p99_ms"]
    assert items["max_ms"] == max(durations) / 1000


def check_status_over_time(path):
    rows = run(path, "status_over_time")
    totals = {status: sum(row[status] for row in rows) for status in ("1xx", "2xx", "3xx", "4xx", "5xx")}
    assert totals == {"1xx": 0, "2xx": 6 + 4 + 2 + 3 + 2 + 5, "3xx": 0, "4xx": 3 + 1, "5xx": 2}
    assert all(row["requests"] == sum(row[s] for s in totals) + row["no_response"] for row in rows)


def check_status_by_day(path):
    rows = run(path, "status_by_day")
    assert [row["day"] for row in rows] == [day_of(days * DAY_S) for days in (3, 2, 1, 0)]
    assert [row["requests"] for row in rows] == [OLD_ROWS, 0, 0, NOW_ROWS]
    hourly = run(path, "status_over_time")
    for status in ("1xx", "2xx", "3xx", "4xx", "5xx", "no_response"):
        assert sum(row[status] for row in rows) == sum(row[status] for row in hourly), status
    assert (rows[0]["4xx"], rows[-1]["5xx"]) == (1, 2)


def check_latency_by_day(path):
    rows = run(path, "latency_by_day")
    assert [(row["day"], row["timed"]) for row in rows] == [(day_of(3 * DAY_S), OLD_ROWS), (day_of(), NOW_ROWS)]
    percentiles_match(path, rows, "day", "%Y-%m-%d", 86_400_000)


def check_latency_over_time(path):
    rows = [row for row in run(path, "latency_over_time")]
    assert sum(row["timed"] for row in rows) == NOW_ROWS + OLD_ROWS
    percentiles_match(path, rows, "hour", "%Y-%m-%dT%H:00Z", 3_600_000)


def percentiles_match(path, rows, unit, text, span_ms):
    """Each row's p50, p95 and p99 are what rollups.percentiles reads for its unit (named ``text``)."""
    conn = sqlite3.connect(path)
    try:
        for row in rows:
            start_ms = int(time.mktime(time.strptime(row[unit], text)) - time.timezone) * 1000
            found = rollups.percentiles(conn, start_ms, start_ms + span_ms)
            ms_close([row["p50_ms"], row["p95_ms"], row["p99_ms"]], [found[q] / 1000 for q in (0.5, 0.95, 0.99)])
    finally:
        conn.close()


def check_bots_and_humans(path):
    rows = by(run(path, "bots_and_humans"), "agent")
    assert (rows["people"]["requests"], rows["bots"]["requests"]) == (6 + 4 + 2 + 2 + 5, 3 + 2 + 3 + 1)
    assert (rows["bots"]["client_errors"], rows["bots"]["server_errors"], rows["people"]["server_errors"]) == (4, 2, 0)
    assert rows["people"]["percent"] + rows["bots"]["percent"] == pytest.approx(100)


def check_visitors_by_day(path):
    rows = run(path, "visitors_by_day")
    # OLD's day was over when its rows were written (the clock was patched, its salt never made):
    # no visitors; today: Chrome from 10.0.1.0/24 and 10.0.2.0/24, Googlebot, curl.
    assert [(row["day"], row["people"], row["bots"], row["visitors"]) for row in rows] == [(day_of(), 2, 2, 4)]


def check_bytes_served(path):
    rows = run(path, "bytes_served")
    assert rows[0]["route"] == ITEMS and rows[0]["bytes"] == 6 * 10 + 4 * 20 + 2 * 30 + 5 * 10
    assert sum(row["bytes"] for row in rows) == sum(body(page) * times for _, page, *_, times in NOW + OLD)
    assert sum(row["percent"] for row in rows) == pytest.approx(100, abs=0.05)
    assert by(rows, "route")[ITEMS]["bytes_per_request"] == round(250 / 17)


def check_referrers(path):
    rows = run(path, "referrers")
    assert [(row["referrer"], row["requests"]) for row in rows] == [("(none)", 3 + 2 + 3 + 2 + 6), (GOOGLE, 8),
                                                                    (NEWS, 4)]


def check_referring_sites(path):
    rows = run(path, "referring_sites")
    assert [(row["site"], row["requests"], row["referrers"]) for row in rows] == [
        ("(none)", 16, 0), ("google.com", 8, 1), ("news.example.org", 4, 1)]


def check_agents(path):
    rows = run(path, "agents")
    found = {(row["browser"], row["os"], row["device"], row["agent"]): row["requests"] for row in rows}
    assert found == {("Chrome", "Windows", "desktop", "person"): 6 + 4 + 2 + 2 + 5,
                     ("Googlebot", "Other", "bot", "bot"): 5, ("curl", "Other", "bot", "bot"): 4}


def check_last_requests(path):
    rows = run(path, "last_requests")
    assert len(rows) == NOW_ROWS + OLD_ROWS
    assert [row["id"] for row in rows] == sorted((row["id"] for row in rows), reverse=True)
    newest = rows[0]
    assert (newest["method"], newest["path"], newest["route"], newest["status"], newest["bytes"]) == (
        "POST", "/items", "/items", 201, 4)
    assert (newest["agent"], newest["browser"], newest["os"], newest["referrer"], newest["client_ip"]) == (
        "person", "Chrome", "Windows", GOOGLE, "10.0.1.0")
    assert newest["start"].startswith(day_of()) and newest["start"].endswith("Z")
    assert rows[-1]["path"] in ("/items/1", "/old/page") and rows[-1]["start"].startswith(day_of(3 * DAY_S))
    assert all(isinstance(row["duration_ms"], float) for row in rows)


CHECKS = {name[len("check_"):]: check for name, check in globals().items() if name.startswith("check_")}


def test_every_query_has_a_check_of_its_numbers():
    assert sorted(CHECKS) == sorted(QUERIES)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_query_numbers(filled, name):
    CHECKS[name](filled)


def test_queries_describe_themselves_and_take_the_range():
    for name, query in QUERIES.items():
        assert query["title"] and query["description"].endswith("."), name
        assert query["params"][:2] == ["start", "end"], name
        for param in query["params"]:
            assert f":{param}" in query["sql"], (name, param)


# ---- parameters -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(QUERIES))
def test_an_explicit_range_gives_what_the_blank_one_does(filled, name):
    """The default is the last 7 days up to now: the same rows as that range given as datetimes."""
    now = time.time()
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 7 * DAY_S - 3600))  # an hour's margin either side
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600))
    blank, explicit = run(filled, name), run(filled, name, start=start, end=end)
    assert blank and explicit
    if name == "summary":
        blank, explicit = [{k: v for k, v in row.items() if k not in ("start", "end")} for row in blank + explicit]
        assert blank == explicit
    elif name in ("traffic_by_hour", "traffic_by_day", "status_over_time", "status_by_day", "latency_over_time",
                  "latency_by_day", "visitors_by_day", "last_requests"):
        assert explicit == blank
    else:
        assert sorted(map(repr, explicit)) == sorted(map(repr, blank))


def test_a_bare_date_as_end_includes_that_day_and_start_is_inclusive(filled):
    old_day = day_of(3 * DAY_S)
    (row,) = run(filled, "summary", start=old_day, end=old_day)
    assert row["requests"] == OLD_ROWS
    assert row["start"] == f"{old_day}T00:00:00.000Z" and row["end"] == f"{day_of(2 * DAY_S)}T00:00:00.000Z"
    assert [r["day"] for r in run(filled, "traffic_by_day", start=old_day, end=old_day)] == [old_day]
    assert len(run(filled, "last_requests", start=old_day, end=old_day)) == OLD_ROWS
    assert sum(r["requests"] for r in run(filled, "top_paths", start=old_day, end=old_day)) == OLD_ROWS


def test_a_datetime_end_is_exclusive(filled):
    """Ending at the start of today leaves out today's rows, from the rollups and from the raw rows."""
    today = f"{day_of()}T00:00:00"
    assert run(filled, "summary", start=day_of(20 * DAY_S), end=today)[0]["requests"] == OLD_ROWS + 2
    assert sum(r["requests"] for r in run(filled, "traffic_by_hour", start=day_of(20 * DAY_S), end=today)) == OLD_ROWS + 2
    assert len(run(filled, "last_requests", start=day_of(20 * DAY_S), end=today)) == OLD_ROWS + 2
    assert run(filled, "summary", start=today, end=f"{day_of()} 23:59:59.999")[0]["requests"] == NOW_ROWS


def test_javascript_times_and_offsets_are_read_as_utc(filled):
    """A dashboard sends Date.toISOString() (2026-12-01T00:00:00.000Z); an offset is applied."""
    old_day, next_day = day_of(3 * DAY_S), day_of(2 * DAY_S)
    for start, end in ((f"{old_day}T00:00:00.000Z", f"{next_day}T00:00:00.000Z"),
                       (f"{old_day}T01:00:00+01:00", f"{next_day} 01:00+01:00")):
        (row,) = run(filled, "summary", start=start, end=end)
        assert (row["start"], row["end"], row["requests"]) == (f"{old_day}T00:00:00.000Z",
                                                               f"{next_day}T00:00:00.000Z", OLD_ROWS)


def test_an_earlier_start_reaches_the_ten_day_old_rows(filled):
    rows = by(run(filled, "top_paths", start=day_of(11 * DAY_S)), "path")
    assert rows["/items/9"]["requests"] == 2
    assert by(run(filled, "top_routes", start=day_of(11 * DAY_S)), "route")[ITEMS]["requests"] == 19
    days = run(filled, "traffic_by_day", start=day_of(11 * DAY_S))
    assert len(days) == 11 and days[0]["requests"] == 2


def test_path_prefix_filters_routes_and_paths(filled):
    rows = run(filled, "top_routes", path_prefix="/users")
    assert [(row["route"], row["requests"]) for row in rows] == [(USERS, 5)]
    assert run(filled, "summary", path_prefix="/users")[0]["requests"] == 5
    assert [row["path"] for row in run(filled, "top_paths", path_prefix="/items/")] == ["/items/1", "/items/2",
                                                                                        "/items/3"]
    assert {row["path"] for row in run(filled, "last_requests", path_prefix="/missing")} == {"/missing/page"}
    assert [row["referrer"] for row in run(filled, "referrers", path_prefix="/items/2")] == [NEWS]
    assert run(filled, "top_routes", path_prefix="/nothing") == []
    # Chrome from 10.0.1.0/24 (two addresses there) and from 10.0.2.0/24: two visitors today.
    today = [row for row in run(filled, "visitors_by_day", path_prefix="/items/") if row["day"] == day_of()]
    assert [(row["people"], row["bots"], row["visitors"]) for row in today] == [(2, 0, 2)]
    assert run(filled, "visitors_by_day", path_prefix="/nothing") == []


def test_every_query_with_a_path_prefix_answers_for_those_paths_alone(filled):
    """/users matches the route /users/{name} and its two paths: /users/ann three times (200) and
    /users/zed twice (503), all from Googlebot, with no referer, in today's hour."""
    def users(name):
        return run(filled, name, path_prefix="/users")

    def total(name, column="requests"):
        return sum(row[column] for row in users(name))

    checked = {
        "summary": lambda: (users("summary")[0]["requests"], users("summary")[0]["bots"]) == (5, 5),
        "traffic_by_hour": lambda: total("traffic_by_hour") == 5 and total("traffic_by_hour", "server_errors") == 2,
        "traffic_by_day": lambda: total("traffic_by_day") == 5 and total("traffic_by_day", "bots") == 5,
        "status_over_time": lambda: (total("status_over_time", "2xx"), total("status_over_time", "5xx")) == (3, 2),
        "status_by_day": lambda: (total("status_by_day", "2xx"), total("status_by_day", "5xx"), total("status_by_day")) == (3, 2, 5),
        "latency_over_time": lambda: total("latency_over_time", "timed") == 5,
        "latency_by_day": lambda: total("latency_by_day", "timed") == 5,
        "top_routes": lambda: [(r["route"], r["requests"]) for r in users("top_routes")] == [(USERS, 5)],
        "top_paths": lambda: [(r["path"], r["requests"]) for r in users("top_paths")] == [("/users/ann", 3), ("/users/zed", 2)],
        "error_paths": lambda: [(r["route"], r["client_errors"], r["server_errors"]) for r in users("error_paths")] == [(USERS, 0, 2)],
        "slowest_routes": lambda: [(r["route"], r["requests"]) for r in users("slowest_routes")] == [(USERS, 5)],
        "bots_and_humans": lambda: [(r["agent"], r["requests"]) for r in users("bots_and_humans")] == [("bots", 5)],
        "bytes_served": lambda: [(r["route"], r["bytes"]) for r in users("bytes_served")] == [(USERS, 3 * 3 + 2 * 4)],
        "referrers": lambda: [(r["referrer"], r["requests"]) for r in users("referrers")] == [("(none)", 5)],
        "referring_sites": lambda: [(r["site"], r["requests"]) for r in users("referring_sites")] == [("(none)", 5)],
        "agents": lambda: [(r["browser"], r["requests"]) for r in users("agents")] == [("Googlebot", 5)],
        "last_requests": lambda: sorted(r["path"] for r in users("last_requests")) == ["/users/ann"] * 3 + ["/users/zed"] * 2,
        # One visitor: Googlebot from 192.0.2.0/24, from the raw rows (the visitor sets hold no path).
        "visitors_by_day": lambda: [(r["day"], r["people"], r["bots"]) for r in users("visitors_by_day")] == [(day_of(), 0, 1)],
    }
    assert sorted(checked) == sorted(name for name, query in QUERIES.items() if "path_prefix" in query["params"])
    assert [name for name, holds in checked.items() if not holds()] == []


@pytest.mark.parametrize("bad", [{"start": "not a date"}, {"end": "not a date"}, {"start": "12345"},
                                 {"end": "2026-13-45"}, {"start": "2026-01-02", "end": "2026-01-01"}])
@pytest.mark.parametrize("name", sorted(QUERIES))
def test_a_bad_range_gives_no_rows_rather_than_wrong_ones(filled, name, bad):
    assert run(filled, name, **bad) == []


# ---- after pruning ---------------------------------------------------------------------------------

ROLLUP_QUERIES = ("summary", "traffic_by_hour", "traffic_by_day", "top_routes", "error_paths", "slowest_routes",
                  "status_over_time", "status_by_day", "latency_over_time", "latency_by_day", "bots_and_humans",
                  "visitors_by_day", "bytes_served",
                  "top_paths", "referrers", "referring_sites", "agents")


def test_rollup_queries_give_the_same_answer_after_the_raw_rows_are_pruned(log):
    wide = {"start": day_of(11 * DAY_S), "end": day_of(-DAY_S)}
    before = {name: run(log, name, **wide) for name in ROLLUP_QUERIES}
    result = CliRunner().invoke(cli, ["prune", str(log), "--keep-days", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert raw(log, "SELECT count(*) FROM request_log") == [(NOW_ROWS,)]
    for name in ROLLUP_QUERIES:
        assert run(log, name, **wide) == before[name], name
    assert before["summary"][0]["requests"] == NOW_ROWS + OLD_ROWS + 2
    assert sum(row["requests"] for row in before["top_paths"]) == NOW_ROWS + OLD_ROWS + 2
    # The raw rows' query only sees what is left.
    assert len(run(log, "last_requests", **wide)) == NOW_ROWS


def test_last_requests_stops_at_a_hundred_newest_first(tmp_path):
    path = tmp_path / "many.db"
    asyncio.run(send_traffic(path, [("GET", "/items/1", CHROME, None, "10.0.1.5", 130),
                                    ("GET", "/users/last", CURL, None, "10.0.1.5", 1)]))
    rows = run(path, "last_requests")
    assert len(rows) == 100 and rows[0]["path"] == "/users/last" and rows[0]["agent"] == "bot"
    assert rows[0]["id"] == raw(path, "SELECT max(id) FROM request_log")[0][0]


def test_hours_without_rollups_are_left_out_until_a_rebuild(log):
    """Raw rows from before rollups existed (a file upgraded from schema 1) count once `rollup --rebuild` ran."""
    wide = {"start": day_of(11 * DAY_S), "end": day_of(-DAY_S)}
    before = {name: run(log, name, **wide) for name in ("summary", "top_routes", "slowest_routes", "traffic_by_day")}
    conn = sqlite3.connect(log)
    try:
        with conn:
            for table in ("rollup_hourly", "rollup_daily", "rollup_traffic_hourly", "rollup_traffic_daily",
                          *route_summaries.TABLES):
                conn.execute(f"DELETE FROM {table}")
    finally:
        conn.close()
    assert run(log, "summary", **wide)[0]["requests"] == 0 and run(log, "top_routes", **wide) == []
    assert sum(row["requests"] for row in run(log, "top_paths", **wide)) == NOW_ROWS + OLD_ROWS + 2
    result = CliRunner().invoke(cli, ["rollup", str(log), "--rebuild"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name, rows in before.items():
        assert run(log, name, **wide) == rows, name


# ---- the top lists' watermark ----------------------------------------------------------------------

TOPLIST_QUERIES = ("top_paths", "referrers", "referring_sites", "agents")
TOPLIST_RANGES = [{}, {"start": day_of(11 * DAY_S)}, {"path_prefix": "/items/"}, {"path_prefix": "/users/zed"},
                  {"start": day_of(3 * DAY_S), "end": day_of(3 * DAY_S)}]


def counted_up_to(path, where):
    """Recount the file's top lists up to ``where``: "end" (the newest row), "middle" (half of the rows) or 0."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        newest = conn.execute("SELECT max(id) FROM request_log").fetchone()[0]
        mark = {"end": newest, "middle": newest // 2, 0: 0}[where]
        conn.execute("BEGIN IMMEDIATE")
        for table in toplists.TABLES:
            conn.execute(f"DELETE FROM {table}")
        toplists.set_mark(conn, 0)
        if mark:
            toplists.catch_up_slice(conn, rows=mark)
        conn.execute("COMMIT")
        assert toplists.marked(conn) == mark
        counted = conn.execute("SELECT coalesce(sum(hits), 0) FROM rollup_paths_hourly").fetchone()[0]
        assert counted == mark
    finally:
        conn.close()


@pytest.mark.parametrize("where", ["end", "middle", 0])
def test_top_lists_and_their_tail_count_every_row_wherever_the_watermark_is(log, where):
    """Rows up to the watermark come from the top lists, the rest from the raw rows: the same answers
    with the lists caught up, half way (the range's rows split between both) or empty."""
    before = {(name, i): run(log, name, **period) for name in TOPLIST_QUERIES for i, period in enumerate(TOPLIST_RANGES)}
    counted_up_to(log, where)
    for name in TOPLIST_QUERIES:
        CHECKS[name](log)
        for i, period in enumerate(TOPLIST_RANGES):
            assert run(log, name, **period) == before[name, i], (name, period)
    assert [row["path"] for row in run(log, "top_paths", path_prefix="/items/")] == ["/items/1", "/items/2", "/items/3"]
    assert by(run(log, "top_paths", start=day_of(11 * DAY_S)), "path")["/items/9"]["requests"] == 2


def test_the_tail_is_only_the_rows_above_the_watermark(log):
    """Rows at or below the watermark are read from the top lists alone: deleted raw rows stay counted."""
    counted_up_to(log, "end")
    expected = run(log, "top_paths")
    with sqlite3.connect(log) as conn:
        conn.execute("DELETE FROM request_log")
    assert run(log, "top_paths") == expected
    assert sum(row["requests"] for row in run(log, "referrers")) == NOW_ROWS + OLD_ROWS


# ---- the site's totals -----------------------------------------------------------------------------

SITE_QUERIES = ("summary", "traffic_by_hour", "traffic_by_day", "status_over_time", "status_by_day",
                "latency_over_time", "latency_by_day", "bots_and_humans")


def timeless(rows):
    """Rows without summary's start and end, which a blank end puts at the moment of the run."""
    return [{key: value for key, value in row.items() if key not in ("start", "end")} for row in rows]


@pytest.mark.parametrize("name", SITE_QUERIES)
def test_site_totals_give_what_the_detailed_rollups_do(filled, name):
    """No prefix reads rollup_traffic_*; '/' matches every path and route, so it reads rollup_hourly and _daily
    for the same requests: the same rows, over the default range, eleven days and hours that cut days."""
    now = time.time()
    ranges = [{}, {"start": day_of(11 * DAY_S)},
              {"start": time.strftime("%Y-%m-%dT%H:30", time.gmtime(now - 3 * DAY_S - 7200)),
               "end": time.strftime("%Y-%m-%dT%H:15", time.gmtime(now + 3600))}]
    for period in ranges:
        site, detailed = timeless(run(filled, name, **period)), timeless(run(filled, name, path_prefix="/", **period))
        assert site and site == detailed, period
    assert any(row.get("requests", row.get("timed")) for row in site)


def test_site_queries_read_the_site_totals_only_without_a_prefix(log):
    """Emptied, the site's totals leave the blank-prefix answers empty and the prefixed ones as they were."""
    before = {name: timeless(run(log, name, path_prefix="/")) for name in SITE_QUERIES}
    conn = sqlite3.connect(log)
    try:
        with conn:
            conn.execute("DELETE FROM rollup_traffic_hourly")
            conn.execute("DELETE FROM rollup_traffic_daily")
    finally:
        conn.close()
    assert run(log, "summary")[0]["requests"] == 0
    for name in SITE_QUERIES:
        if name != "summary":
            assert run(log, name) == [], name
        assert timeless(run(log, name, path_prefix="/")) == before[name], name
