"""The traffic dashboard of a log database, through Datasette's own client on each line.

The log is written by the real middleware from real requests (httpx.ASGITransport): a few rows three
days old (the wall clock moved back while they are logged) and the rest now, so that ranges can tell
them apart.
"""
import asyncio
import datetime
import html
import html.parser
import shutil
import sqlite3
import time
import urllib.parse
from unittest import mock

import httpx
import pytest
from datasette.app import Datasette
from datasette.database import QueryInterrupted

from asgi_log_to_sqlite import AsgiLogToSqlite, create_file
from asgi_log_to_sqlite.datasette import dashboard
from asgi_log_to_sqlite.datasette.queries import QUERIES

from conftest import DATASETTE_MAJOR

DAY_S = 86_400
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
CHROME_ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/120.0.0.0 Mobile Safari/537.36")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CURL = "curl/8.5.0"
# (path, agent, referer, times). OLD is logged three days ago, NOW at the time of the test.
OLD = [("/archive/2024", FIREFOX, "https://news.example.org/item?id=1", 3), ("/missing", GOOGLEBOT, None, 2)]
NOW = [
    ("/", FIREFOX, "https://search.example.com/?q=logs", 5),
    ("/", CHROME_ANDROID, None, 3),
    ("/api/items", CHROME_ANDROID, "https://blog.example.net/post", 4),
    ("/api/items/7", GOOGLEBOT, None, 2),
    ("/missing", CURL, None, 3),
    ("/api/boom", FIREFOX, None, 2),
    ("/old", FIREFOX, None, 1),
]
OLD_ROWS = sum(times for *_, times in OLD)
NOW_ROWS = sum(times for *_, times in NOW)


async def app(scope, receive, send):
    """404 for /missing, 500 for /api/boom, a redirect for /old, else 200 with a body as long as the path."""
    path = scope["path"]
    status = {"/missing": 404, "/api/boom": 500, "/old": 302}.get(path, 200)
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": path.encode() * 10})


async def send_traffic(file, traffic):
    """Send ``traffic`` through AsgiLogToSqlite into ``file``, then close the writer (every row written)."""
    logged = AsgiLogToSqlite(app, str(file))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=logged), base_url="http://testserver") as client:
        for path, agent, referer, times in traffic:
            headers = {"user-agent": agent, **({"referer": referer} if referer else {})}
            for _ in range(times):
                await client.get(path, headers=headers)
    assert logged.close()


def make_log(file, old=OLD, now=NOW, days_back=3):
    """A log with ``old`` logged ``days_back`` days ago and ``now`` logged now, by the real middleware."""
    real = time.time
    with mock.patch("time.time", lambda: real() - days_back * DAY_S):
        asyncio.run(send_traffic(file, old))
    asyncio.run(send_traffic(file, now))
    return file


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    return make_log(tmp_path_factory.mktemp("dashboard") / "requests.db")


@pytest.fixture
def log(filled, tmp_path):
    path = tmp_path / "requests.db"
    shutil.copy(filled, path)
    return path


def datasette_for(*files, allow=None):
    """A Datasette serving ``files``, with ``allow`` blocks per database where this line reads them."""
    kwargs = {}
    if allow:
        settings = {"databases": {name: {"allow": block} for name, block in allow.items()}}
        kwargs = {"config": settings} if DATASETTE_MAJOR >= 1 else {"metadata": settings}
    return Datasette([str(f) for f in files], **kwargs)


def actor_cookie(ds, actor):
    return {"ds_actor": ds.sign({"a": actor}, "actor")}


async def data(ds, query="", database="requests"):
    response = await ds.client.get(f"/{database}/-/dashboard.json" + (f"?{query}" if query else ""))
    assert response.status_code == 200, response.text
    return response.json()


def expected_rows(path, name, params):
    """The query's rows run directly on the file, as Datasette's page for it shows them."""
    conn = sqlite3.connect(path)
    try:
        return [list(row) for row in conn.execute(QUERIES[name]["sql"], {p: params.get(p, "") for p in QUERIES[name]["params"]})]
    finally:
        conn.close()


class Links(html.parser.HTMLParser):
    """Every URL the page's HTML refers to (href, src, action), in order, and those the browser loads."""

    def __init__(self):
        super().__init__()
        self.urls, self.loaded = [], []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src", "action") and value is not None:
                self.urls.append(value)
                # Everything but a link to follow is fetched with the page: scripts, styles, images, icons.
                if tag != "a":
                    self.loaded.append(value)


def off_site(urls):
    return [u for u in urls if urllib.parse.urlsplit(u).netloc or u.startswith("//")]


def parse_urls(page, loaded=False):
    links = Links()
    links.feed(page)
    return links.loaded if loaded else links.urls


# ---- the page --------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_the_page_extends_datasette_and_draws_with_the_vendored_chart_library(log):
    ds = datasette_for(log)
    response = await ds.client.get("/requests/-/dashboard")
    assert response.status_code == 200
    page = response.text
    assert "<title>Traffic: requests</title>" in page
    assert 'class="hd"' in page or "<header>" in page  # Datasette's base.html, not a page of our own
    urls = parse_urls(page)
    for name in ("chart.umd.min.js", "dashboard.js", "dashboard.css"):
        assert any(u.startswith("/-/static-plugins/") and u.endswith(name) for u in urls), name
    chart = await ds.client.get(next(u for u in parse_urls(page) if u.endswith("chart.umd.min.js")))
    assert chart.status_code == 200 and chart.text.startswith("/*!\n * Chart.js v4.")


@pytest.mark.asyncio
async def test_the_page_refers_only_to_its_own_origin(log):
    ds = datasette_for(log)
    page = (await ds.client.get("/requests/-/dashboard")).text
    loaded = parse_urls(page, loaded=True)
    assert len(loaded) >= 4  # Datasette's app.css, the chart library, dashboard.js and its css
    assert off_site(loaded) == []
    for url in loaded:
        assert (await ds.client.get(url)).status_code == 200, url
    # The one link away is the footer's "Powered by Datasette".
    assert off_site(parse_urls(page)) == ["https://datasette.io/"]


@pytest.mark.asyncio
async def test_the_period_control_keeps_the_range_in_its_links_and_marks_the_current_one(log):
    ds = datasette_for(log)
    page = (await ds.client.get("/requests/-/dashboard?range=30d")).text
    urls = parse_urls(page)
    for preset in ("24h", "7d", "30d"):
        assert f"/requests/-/dashboard?range={preset}" in urls
    assert 'href="/requests/-/dashboard?range=30d" class="log-preset" aria-current="true"' in page
    assert "last 30 days" in page


@pytest.mark.asyncio
async def test_a_bad_period_is_a_400_that_quotes_it(log):
    ds = datasette_for(log)
    response = await ds.client.get("/requests/-/dashboard.json?start=yesterday")
    assert response.status_code == 400
    assert "start='yesterday' is not a date or datetime" in response.json()["error"]
    response = await ds.client.get("/requests/-/dashboard.json?range=1y")
    assert response.status_code == 400 and "expected one of 24h, 7d, 30d" in response.json()["error"]
    page = await ds.client.get("/requests/-/dashboard?start=2026-12-05&end=2026-12-01")
    assert page.status_code == 400 and "is not before end=" in page.text


@pytest.mark.asyncio
async def test_a_period_past_the_calendar_is_a_400_not_a_crash(log):
    ds = datasette_for(log)
    response = await ds.client.get("/requests/-/dashboard.json?end=9999-12-31")  # its day ends after year 9999
    assert response.status_code == 400 and "end='9999-12-31' is not a date" in response.json()["error"]
    page = await ds.client.get("/requests/-/dashboard?start=0001-01-02&end=2026-01-01")  # no previous period
    assert page.status_code == 400 and "before the year 1" in page.text


@pytest.mark.asyncio
@pytest.mark.parametrize("own", [{"sql": "select 1 as one"}, {"sql": QUERIES["last_requests"]["sql"], "allow": False}])
async def test_a_panel_shows_no_rows_of_a_query_the_user_replaced_or_locked(log, own):
    # The user's query of that name wins in Datasette: its own SQL, or ours behind allow: false.
    settings = {"databases": {"requests": {"queries": {"last_requests": own}}}}
    ds = Datasette([str(log)], **({"config": settings} if DATASETTE_MAJOR >= 1 else {"metadata": settings}))
    panels = (await data(ds))["panels"]
    assert panels["last_requests"]["rows"] == []
    assert ("its own" if own.get("allow") is None else "permission") in panels["last_requests"]["error"]
    assert panels["summary"]["rows"] and panels["summary"]["error"] is None  # the others still draw


# ---- the data endpoint: each panel is exactly its query ---------------------------------------------

@pytest.mark.asyncio
async def test_each_panel_has_the_rows_of_its_query_and_links_to_it(log):
    ds = datasette_for(log)
    result = await data(ds)
    period = result["period"]
    params = {"start": period["start"], "end": period["end"]}
    assert set(result["panels"]) == set(dashboard.PANELS)
    for panel_id, panel in result["panels"].items():
        name = panel["query"]
        if name not in QUERIES:
            continue
        assert panel["error"] is None, panel["error"]
        assert panel["rows"] == expected_rows(log, name, params), name
        assert panel["url"] == f"/requests/{name}?" + urllib.parse.urlencode(
            {p: params.get(p, "") for p in QUERIES[name]["params"]})


@pytest.mark.asyncio
async def test_the_traffic_panel_counts_every_request_in_the_period(log):
    ds = datasette_for(log)
    week = await data(ds)
    traffic = week["panels"]["traffic"]
    assert traffic["query"] == "traffic_by_hour"
    requests = traffic["columns"].index("requests")
    assert sum(row[requests] for row in traffic["rows"]) == OLD_ROWS + NOW_ROWS
    day = await data(ds, "range=24h")
    assert sum(row[requests] for row in day["panels"]["traffic"]["rows"]) == NOW_ROWS
    # The previous 24 hours hold nothing; the previous week does not reach three days back either.
    assert sum(row[requests] for row in day["previous"]["traffic"]["rows"]) == 0


def since_two_days_ago() -> str:
    """A period from midnight two days ago until now: the period before it, as long, holds OLD's day."""
    return (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)).date().isoformat()


@pytest.mark.asyncio
async def test_the_previous_period_is_the_one_as_long_before_it(log):
    ds = datasette_for(log)
    result = await data(ds, f"start={since_two_days_ago()}")
    period = result["period"]
    assert period["previous_end"] == period["start"]
    start, end, before = (datetime.datetime.fromisoformat(period[key].replace("Z", "+00:00"))
                          for key in ("start", "end", "previous_start"))
    assert start - before == end - start
    for panel, expected in (("summary", (NOW_ROWS, OLD_ROWS)), ("traffic", (NOW_ROWS, OLD_ROWS))):
        counts = []
        for which in ("panels", "previous"):
            found = result[which][panel]
            requests = found["columns"].index("requests")
            counts.append(sum(row[requests] for row in found["rows"]))
        assert tuple(counts) == expected, panel
    # Only the compared panels are asked for twice.
    assert set(result["previous"]) == set(dashboard.COMPARED)


@pytest.mark.asyncio
async def test_a_custom_range_reaches_the_old_rows_and_long_ranges_read_the_daily_query(log):
    ds = datasette_for(log)
    old_day = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)).date().isoformat()
    result = await data(ds, f"start={old_day}&end={old_day}")
    assert result["period"]["start"] == f"{old_day}T00:00:00Z" and result["period"]["label"] == old_day
    paths = [row[0] for row in result["panels"]["top_paths"]["rows"]]
    assert sorted(paths) == ["/archive/2024", "/missing"]
    month = await data(ds, "range=30d")
    queries = {panel: month["panels"][panel]["query"] for panel in ("traffic", "status_over_time", "latency_over_time")}
    assert queries == {"traffic": "traffic_by_day", "status_over_time": "status_by_day",
                       "latency_over_time": "latency_by_day"}
    assert sum(row[1] for row in month["panels"]["status_over_time"]["rows"]) == \
        sum(row[1] for row in month["panels"]["traffic"]["rows"])
    week = await data(ds, "range=7d")
    assert [week["panels"][panel]["query"] for panel in ("traffic", "status_over_time", "latency_over_time")] == \
        ["traffic_by_hour", "status_over_time", "latency_over_time"]
    assert month["period"]["previous_end"] == month["period"]["start"]


@pytest.mark.asyncio
async def test_the_path_filter_narrows_every_panel_that_takes_it(log):
    ds = datasette_for(log)
    result = await data(ds, "path_prefix=/api")
    paths = [row[0] for row in result["panels"]["top_paths"]["rows"]]
    assert sorted(paths) == ["/api/boom", "/api/items", "/api/items/7"]
    assert "path_prefix=%2Fapi" in result["panels"]["top_paths"]["url"]


@pytest.mark.asyncio
async def test_panels_asks_for_some_panels_only(log):
    ds = datasette_for(log)
    result = await data(ds, "panels=traffic,last_requests")
    assert set(result["panels"]) == {"traffic", "last_requests"}
    response = await ds.client.get("/requests/-/dashboard.json?panels=traffic,pie")
    assert response.status_code == 400 and "panels='pie'" in response.json()["error"]


@pytest.mark.asyncio
async def test_an_empty_log_says_so_and_shows_how_to_make_traffic(tmp_path):
    path = create_file(str(tmp_path / "requests.db"))
    ds = datasette_for(path)
    result = await data(ds)
    assert result["empty"] is True
    page = (await ds.client.get("/requests/-/dashboard")).text
    assert "No requests in this period" in page
    # Aimed at the server the page came from (Datasette's client calls itself localhost) ...
    assert "python -m asgi_log_to_sqlite.traffic http://localhost --requests 300 --seconds 60" in page
    # ... but never at a server elsewhere, where the generator would refuse to send.
    page = (await ds.client.get("/requests/-/dashboard", headers={"host": "logs.example.com"})).text
    assert "python -m asgi_log_to_sqlite.traffic http://127.0.0.1:8001 --requests 300 --seconds 60" in page


# ---- links from the database page ------------------------------------------------------------------

@pytest.mark.asyncio
async def test_the_log_database_page_links_to_its_dashboard(log, tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x)").connection.close()
    ds = datasette_for(log, other)
    page = (await ds.client.get("/requests")).text
    # The database actions menu on both lines, and the top of the page on 1.0 (0.65 has no top_database).
    top = '<p class="log-dashboard-link"><a href="/requests/-/dashboard">Traffic dashboard</a>'
    assert (top in page) == (DATASETTE_MAJOR >= 1)
    assert page.replace(top, "").count('<a href="/requests/-/dashboard"') == 1
    assert "/-/dashboard" not in (await ds.client.get("/other")).text


# ---- permissions and what is not a log -------------------------------------------------------------

@pytest.mark.asyncio
async def test_a_database_that_is_not_a_log_has_no_dashboard(tmp_path):
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("create table t (x)").connection.close()
    ds = datasette_for(other)
    assert (await ds.client.get("/other/-/dashboard")).status_code == 404
    assert (await ds.client.get("/other/-/dashboard.json")).status_code == 404
    assert (await ds.client.get("/nothing/-/dashboard")).status_code == 404


@pytest.mark.asyncio
async def test_an_actor_who_may_not_view_the_database_gets_403(log):
    ds = datasette_for(log, allow={"requests": {"id": "root"}})
    for url in ("/requests/-/dashboard", "/requests/-/dashboard.json"):
        assert (await ds.client.get(url)).status_code == 403, url
        other = await ds.client.get(url, cookies=actor_cookie(ds, {"id": "someone"}))
        assert other.status_code == 403, url
        root = await ds.client.get(url, cookies=actor_cookie(ds, {"id": "root"}))
        assert root.status_code == 200, url
    assert (await ds.client.get("/requests")).status_code == 403



@pytest.mark.asyncio
async def test_every_panel_title_links_to_its_query_in_the_html_itself(log):
    ds = datasette_for(log)
    result = await data(ds, "range=24h")
    page = (await ds.client.get("/requests/-/dashboard?range=24h")).text
    for panel_id, panel in result["panels"].items():
        assert f'href="{html.escape(panel["url"])}"' in page, panel_id


@pytest.mark.asyncio
async def test_under_a_base_url_every_url_of_the_page_carries_it(log):
    ds = Datasette([str(log)], settings={"base_url": "/logs/"})
    page = (await ds.client.get("/requests/-/dashboard")).text
    own = [u for u in parse_urls(page) if not off_site([u])]
    assert own and all(u.startswith("/logs/") for u in own), [u for u in own if not u.startswith("/logs/")]
    assert '"data_url": "/logs/requests/-/dashboard.json"' in page
    result = await data(ds, "panels=top_paths")
    assert result["panels"]["top_paths"]["url"].startswith("/logs/requests/top_paths?")
    database_page = (await ds.client.get("/requests")).text
    assert 'href="/logs/requests/-/dashboard"' in database_page


@pytest.mark.asyncio
async def test_a_query_past_the_time_limit_fails_its_panel_alone_and_says_what_to_do(log):
    ds = datasette_for(log)
    db = ds.get_database("requests")
    real_execute = db.execute

    async def execute(sql, *args, **kwargs):
        # top_paths as Datasette reports a query its time limit stopped; every other query runs.
        if sql == QUERIES["top_paths"]["sql"]:
            raise QueryInterrupted(sqlite3.OperationalError("interrupted"), sql, args)
        return await real_execute(sql, *args, **kwargs)

    with mock.patch.object(db, "execute", execute):
        result = await data(ds, "panels=traffic,top_paths")
    assert result["panels"]["top_paths"]["rows"] == []
    assert result["panels"]["top_paths"]["error"] == (
        "top_paths took longer than Datasette's time limit (1,000 ms): "
        "a shorter period, or --setting sql_time_limit_ms 5000, lets it finish")
    assert result["panels"]["traffic"]["error"] is None and result["panels"]["traffic"]["rows"]
