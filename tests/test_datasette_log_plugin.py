"""The log's Datasette plugin in a real Datasette, on both lines, over logs written by the real logger.

A log opened with no metadata file shows the readable view first, labels for every lookup, default
facets, a description for every column and its lookup tables last; its ready-made queries are on its
page and run; what the user configured wins; any other database gets none of it.
"""
import shutil
import sqlite3

import httpx
import pytest
import pytest_asyncio
import sqlite_utils
from datasette.app import Datasette
from datasette.database import Database
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from asgi_log_to_sqlite import AsgiLogToSqlite, create_file
from asgi_log_to_sqlite.importer import import_logs
from asgi_log_to_sqlite.merging import merge_files
from asgi_log_to_sqlite.datasette import metadata, recognise
from asgi_log_to_sqlite.datasette.queries import QUERIES
from asgi_log_to_sqlite.schema import LOOKUPS
from conftest import DATASETTE_MAJOR, TESTS

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


async def home(request):
    return PlainTextResponse("home")


async def item(request):
    return JSONResponse({"id": request.path_params["item_id"]})


async def boom(request):
    raise RuntimeError("boom")


SITE = Starlette(routes=[Route("/", home), Route("/items/{item_id}", item), Route("/boom", boom)])

# (path, agent): pages, a route with ids, a 404, a 500; a person and a bot.
TRAFFIC = [("/", FIREFOX), ("/items/1", FIREFOX), ("/items/2", GOOGLEBOT), ("/missing", GOOGLEBOT),
           ("/boom", FIREFOX), ("/?q=1", FIREFOX)]


async def write_log(path, traffic=TRAFFIC):
    """A log at ``path`` written by the real logger in front of a Starlette site; returns the path."""
    app = AsgiLogToSqlite(SITE, str(path))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for url, agent in traffic:
            await client.get(url, headers={"user-agent": agent, "referer": "https://example.com/from"})
    app.close(timeout=30)
    return str(path)


def plain_database(path):
    """A SQLite file that is not a log, with a lookup-shaped table of its own."""
    db = sqlite_utils.Database(str(path))
    db["things"].insert_all([{"id": 1, "name": "one"}, {"id": 2, "name": "two"}], pk="id")
    db["uses"].insert({"id": 1, "thing_id": 1, "status": 200}, pk="id", foreign_keys=[("thing_id", "things")])
    db.close()
    return str(path)


@pytest_asyncio.fixture
async def log_path(tmp_path):
    return await write_log(tmp_path / "log.db")


async def get_json(ds, path):
    response = await ds.client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    return response.json()


async def facet_names(ds, path):
    """The facets Datasette computed for a table page (``path`` without .json)."""
    data = await get_json(ds, f"{path}.json?_extra=facet_results")
    results = data["facet_results"]
    # 1.0 nests them under "results" beside "timed_out"; 0.65 returns them directly.
    return set(results["results"] if "results" in results and "timed_out" in results else results)


async def column_description(ds, database, table, column):
    """The description Datasette holds for a column, wherever this line keeps it."""
    if DATASETTE_MAJOR >= 1:
        return (await ds.get_column_metadata(database, table, column)).get("description")
    return (ds.table_metadata(database, table).get("columns") or {}).get(column)


def queries_page(database):
    """The page that lists every query of a database: 1.0 shows five on the database page, and links to this."""
    return f"/{database}/-/queries" if DATASETTE_MAJOR >= 1 else f"/{database}"


async def configured(ds, database, table, key):
    """A table option (label_column, facets, hidden...) as this line holds it: 1.0's config, 0.65's metadata."""
    if DATASETTE_MAJOR >= 1:
        await ds.invoke_startup()
        return (await ds.table_config(database, table)).get(key)
    return ds.table_metadata(database, table).get(key)


async def query_names(ds, database):
    data = await get_json(ds, f"{queries_page(database)}.json")
    return [query["name"] for query in data["queries"]]


def every_table_and_view(path):
    db = sqlite_utils.Database(path)
    try:
        return {name: [c.name for c in db[name].columns] for name in db.table_names() + db.view_names()}
    finally:
        db.close()


# ---- recognition ---------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_a_log_is_recognised_by_its_schema_and_other_databases_are_not(log_path, tmp_path):
    ds = Datasette(files=[log_path, plain_database(tmp_path / "plain.db")])
    logs = recognise.log_databases(ds)
    assert list(logs) == ["log"]
    assert logs["log"].version >= 2 and "readable_requests" in logs["log"].columns
    # A version-1 file (no log_meta) is not taken for a version-2 log.
    conn = sqlite3.connect(tmp_path / "v1.db")
    for table in ("request_log",) + LOOKUPS:
        conn.execute(f"create table {table} (id integer primary key, name text)")
    conn.execute("pragma user_version = 1")
    conn.close()
    assert recognise.log_schema(Database(ds, path=str(tmp_path / "v1.db"))) is None


@pytest.mark.asyncio
async def test_a_file_that_becomes_a_log_while_datasette_runs_gets_its_queries(tmp_path):
    path = tmp_path / "later.db"
    sqlite3.connect(path).close()
    ds = Datasette(files=[str(path)])
    assert await query_names(ds, "later") == []
    create_file(str(path))
    assert sorted(await query_names(ds, "later")) == sorted(QUERIES)


@pytest.mark.asyncio
async def test_a_log_database_added_after_startup_gets_its_queries_and_labels(log_path, tmp_path):
    ds = Datasette(files=[plain_database(tmp_path / "plain.db")])
    assert await query_names(ds, "plain") == []
    ds.add_database(Database(ds, path=log_path, is_mutable=True), name="added")
    assert sorted(await query_names(ds, "added")) == sorted(QUERIES)
    assert "http_status" in await facet_names(ds, "/added/readable_requests")


# ---- readable by default -------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_the_database_page_leads_with_the_readable_view(log_path):
    ds = Datasette(files=[log_path])
    page = (await ds.client.get("/log")).text
    readable = page.index('href="/log/readable_requests"')
    for table in ("request_log", "log_counters", "rollup_hourly", "requests"):
        assert readable < page.index(f'href="/log/{table}"'), table


@pytest.mark.asyncio
async def test_lookup_tables_come_after_the_main_tables(log_path):
    ds = Datasette(files=[log_path])
    tables = (await get_json(ds, "/log.json"))["tables"]
    names = [table["name"] for table in tables]
    hidden = {table["name"] for table in tables if table["hidden"]}
    assert set(LOOKUPS) | {"rollup_batch", "rollup_salts"} <= hidden
    assert {"request_log", "log_counters", "rollup_hourly", "log_meta"}.isdisjoint(hidden)
    last_main = max(names.index(name) for name in names if name not in hidden)
    assert all(names.index(lookup) > last_main for lookup in LOOKUPS)
    # The page lists the main tables and links to the rest; asked to, it shows them after.
    page = (await ds.client.get("/log")).text
    assert 'href="/log/request_log"' in page and 'href="/log/paths"' not in page
    assert "hidden tables" in page
    shown = (await ds.client.get("/log?_show_hidden=1")).text
    assert shown.index('href="/log/request_log"') < shown.index('href="/log/paths"')


@pytest.mark.asyncio
async def test_every_lookup_is_shown_by_its_name(log_path):
    ds = Datasette(files=[log_path])
    rows = (await get_json(ds, "/log/request_log.json?_labels=on&_shape=objects&_sort=id"))["rows"]
    first = rows[0]
    assert first["method_id"]["label"] == "GET"
    assert first["path_id"]["label"] == "/"
    assert first["user_agent_id"]["label"] == FIREFOX
    assert first["host_id"]["label"] == "testserver"
    assert first["content_type_id"]["label"].startswith("text/plain")
    assert rows[1]["route_id"]["label"] == "/items/{item_id}"
    assert first["referer_id"]["label"] == "https://example.com/from"
    # Set, not left to Datasette's guess: user_agents has four text columns.
    for table in LOOKUPS:
        assert await configured(ds, "log", table, "label_column") == "name", table
        assert await ds.get_database("log").label_column_for_table(table) == "name", table


@pytest.mark.asyncio
async def test_default_facets_are_status_method_content_type_route_and_the_bot_flag(log_path):
    ds = Datasette(files=[log_path])
    assert {"http_status", "method", "content_type", "route", "is_bot"} <= await facet_names(ds, "/log/readable_requests")
    assert {"http_status", "method_id", "content_type_id", "route_id"} <= await facet_names(ds, "/log/request_log")
    assert {"is_bot", "device", "browser"} <= await facet_names(ds, "/log/user_agents")
    assert {"status", "method", "route", "is_bot"} <= await facet_names(ds, "/log/rollup_hourly_readable")
    data = await get_json(ds, "/log/user_agents.json?_extra=facet_results")
    results = data["facet_results"].get("results", data["facet_results"])
    bots = {row["value"]: row["count"] for row in results["is_bot"]["results"]}
    assert bots == {0: 1, 1: 1}


@pytest.mark.asyncio
async def test_every_column_of_every_table_and_view_of_a_new_log_has_a_description(log_path):
    ds = Datasette(files=[log_path])
    await ds.invoke_startup()
    missing = []
    for table, columns in every_table_and_view(log_path).items():
        for column in columns:
            description = await column_description(ds, "log", table, column)
            if not description:
                missing.append(f"{table}.{column}")
    assert missing == []
    page = (await ds.client.get("/log/readable_requests")).text
    assert metadata.DESCRIBED["readable_requests"]["columns"]["duration_ms"] in page
    assert metadata.DESCRIBED["readable_requests"]["description"] in page


@pytest.mark.asyncio
async def test_the_tables_of_an_upgraded_imported_and_merged_log_have_descriptions_too(log_path, tmp_path):
    # A 0.1.1 file upgraded in place keeps requests_0_1; import and merge add their ledgers.
    path = str(tmp_path / "old.db")
    shutil.copy(TESTS / "fixtures" / "log-0.1.1.db", path)
    create_file(path)
    import_logs(path, [str(TESTS / "fixtures" / "access" / "nginx-combined.log")])
    merge_files(path, [log_path])
    tables = every_table_and_view(path)
    assert {"requests_0_1", "import_sources", "log_merged_sources"} <= set(tables)
    ds = Datasette(files=[path])
    await ds.invoke_startup()
    missing = [f"{table}.{column}" for table, columns in tables.items() for column in columns
               if not await column_description(ds, "old", table, column)]
    assert missing == []


@pytest.mark.asyncio
async def test_the_readable_view_shows_the_newest_request_first(log_path):
    ds = Datasette(files=[log_path])
    rows = (await get_json(ds, "/log/readable_requests.json?_shape=objects"))["rows"]
    assert [row["path"] for row in rows[:2]] == ["/", "/boom"]
    assert rows[0]["query_string"] == "?q=1"


# ---- the ready-made queries ----------------------------------------------------------------------

@pytest.mark.asyncio
async def test_every_ready_made_query_is_on_the_log_page_and_runs_with_its_defaults(log_path):
    ds = Datasette(files=[log_path])
    assert sorted(await query_names(ds, "log")) == sorted(QUERIES)
    if DATASETTE_MAJOR >= 1:
        assert f'href="{queries_page("log")}"' in (await ds.client.get("/log")).text
    page = (await ds.client.get(queries_page("log"))).text
    for name, query in QUERIES.items():
        assert f'href="/log/{name}"' in page and query["title"] in page
        data = await get_json(ds, f"/log/{name}.json?_shape=objects")
        assert isinstance(data["rows"], list), name


@pytest.mark.asyncio
async def test_a_database_that_is_not_a_log_gets_no_queries_labels_facets_or_descriptions(log_path, tmp_path):
    ds = Datasette(files=[log_path, plain_database(tmp_path / "plain.db")])
    await ds.invoke_startup()
    assert await query_names(ds, "plain") == []
    assert await facet_names(ds, "/plain/things") == set()
    assert await column_description(ds, "plain", "things", "name") is None
    assert await configured(ds, "plain", "things", "label_column") is None
    assert not [table for table in (await get_json(ds, "/plain.json"))["tables"] if table["hidden"]]
    page = (await ds.client.get("/plain")).text
    assert "readable_requests" not in page


# ---- what the user configured wins ---------------------------------------------------------------

def users_settings(database):
    """Datasette() keyword arguments with a user's own facets, label, descriptions and query of one of our names."""
    name = next(iter(QUERIES))
    tables = {
        "readable_requests": {"facets": ["host"]},
        "paths": {"label_column": "id"},
    }
    described = {
        "description": "Our production traffic",
        "tables": {"readable_requests": {"description": "Every hit", "columns": {"start": "When it came in"}}},
    }
    queries = {name: {"sql": "select 'mine' as owner", "title": "Mine"}}
    if DATASETTE_MAJOR >= 1:
        return {"config": {"databases": {database: {"tables": tables, "queries": queries}}},
                "metadata": {"databases": {database: described}}}
    merged = dict(described, queries=queries)
    merged["tables"] = {table: dict(tables.get(table, {}), **described["tables"].get(table, {}))
                        for table in set(tables) | set(described["tables"])}
    return {"metadata": {"databases": {database: merged}}}


@pytest.mark.asyncio
async def test_what_the_user_configured_wins(log_path):
    ds = Datasette(files=[log_path], **users_settings("log"))
    await ds.invoke_startup()
    assert await facet_names(ds, "/log/readable_requests") == {"host"}
    assert await ds.get_database("log").label_column_for_table("paths") == "id"
    assert await column_description(ds, "log", "readable_requests", "start") == "When it came in"
    # Ours fill in what the user left out.
    assert await column_description(ds, "log", "readable_requests", "path") == \
        metadata.DESCRIBED["readable_requests"]["columns"]["path"]
    table_page = (await ds.client.get("/log/readable_requests")).text
    assert "Every hit" in table_page and metadata.DESCRIBED["readable_requests"]["description"] not in table_page
    database_page = (await ds.client.get("/log")).text
    assert "Our production traffic" in database_page and "Start with" not in database_page
    name = next(iter(QUERIES))
    rows = (await get_json(ds, f"/log/{name}.json?_shape=objects"))["rows"]
    assert rows == [{"owner": "mine"}]
    assert sorted(await query_names(ds, "log")) == sorted(QUERIES)
