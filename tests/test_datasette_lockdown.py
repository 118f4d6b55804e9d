"""The recommended config keeps the log behind sign-in: anonymous requests get 403, the signed-in root 200.

The config is read from docs/datasette.md (its datasette.yaml block on 1.0, its metadata.json block
on 0.65), and the README's own, logger included, so the snippets the docs recommend are the ones
tested: the log's pages, its SQL, its queries and its dashboard.
"""
import json
import os

import pytest
import pytest_asyncio
import yaml

from asgi_log_to_sqlite.datasette.queries import QUERIES
from conftest import DATASETTE_MAJOR, ROOT
from test_datasette_log_plugin import plain_database, write_log
from test_docs import readme_block

DOC = ROOT / "docs" / "datasette.md"
# The comment before each recommended block in docs/datasette.md.
MARKER = "<!-- not run: the recommended lockdown, tested by tests/test_datasette_lockdown.py -->"
LOG_NAME = "requests"   # the docs' log is requests.db, served as the database "requests"


def recommended_config() -> dict:
    """The recommended lockdown for this Datasette line, as docs/datasette.md shows it."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    found = {}
    for number, line in enumerate(lines):
        if line.strip() == MARKER:
            language = lines[number + 1].strip().lstrip("`")
            end = next(j for j in range(number + 2, len(lines)) if lines[j].startswith("```"))
            found[language] = "\n".join(lines[number + 2:end])
    if DATASETTE_MAJOR >= 1:
        return yaml.safe_load(found["yaml"])
    return json.loads(found["json"])


def locked_down_datasette(files):
    """A Datasette serving ``files`` under the recommended config (datasette.yaml on 1.0, metadata.json on 0.65)."""
    from datasette.app import Datasette

    key = "config" if DATASETTE_MAJOR >= 1 else "metadata"
    return Datasette(files=[str(path) for path in files], **{key: recommended_config()})


def signed_in(ds, actor_id="root") -> dict:
    """The cookies of a signed-in actor, as Datasette's own sign-in (``--root``) sets them."""
    return {"ds_actor": ds.sign({"a": {"id": actor_id}}, "actor")}


def sql_url(database: str, sql: str = "select count(*) from request_log") -> str:
    """Where this line runs arbitrary SQL: 1.0 at /db/-/query, 0.65 at /db?sql= (1.0 redirects that there)."""
    if DATASETTE_MAJOR >= 1:
        return f"/{database}/-/query.json?sql={sql}"
    return f"/{database}.json?sql={sql}"


def log_urls(database=LOG_NAME):
    """Every kind of page of the log: database, tables, views, a lookup, SQL, each ready-made query."""
    return [
        f"/{database}", f"/{database}.json", f"/{database}/request_log.json", f"/{database}/readable_requests",
        f"/{database}/readable_requests.json", f"/{database}/paths.json", f"/{database}/request_log/1.json",
        f"/{database}.db", sql_url(database),
    ] + [f"/{database}/{name}.json" for name in QUERIES] + [f"/{database}/{next(iter(QUERIES))}"] + [
        f"/{database}/-/dashboard", f"/{database}/-/dashboard.json", f"/{database}/-/dashboard.json?range=30d"]


@pytest_asyncio.fixture
async def log_and_demo(tmp_path):
    return [await write_log(tmp_path / f"{LOG_NAME}.db"), plain_database(tmp_path / "demo.db")]


@pytest.mark.asyncio
async def test_anonymous_requests_for_the_log_are_refused(log_and_demo):
    ds = locked_down_datasette(log_and_demo)
    # 0.65's ?sql= on the database page, which 1.0 redirects to /-/query: refused before either.
    urls = log_urls() + [f"/{LOG_NAME}?sql=select+1"]
    statuses = {url: (await ds.client.get(url)).status_code for url in urls}
    assert statuses == {url: 403 for url in urls}


@pytest.mark.asyncio
async def test_the_signed_in_root_reads_the_log_its_sql_and_its_queries(log_and_demo):
    ds = locked_down_datasette(log_and_demo)
    cookies = signed_in(ds)
    # The download is refused to everyone: Datasette offers none of a mutable database.
    urls = [url for url in log_urls() if not url.endswith(".db")]
    statuses = {url: (await ds.client.get(url, cookies=cookies)).status_code for url in urls}
    assert statuses == {url: 200 for url in urls}
    rows = (await ds.client.get(sql_url(LOG_NAME), cookies=cookies)).json()["rows"]
    assert list(rows[0].values() if isinstance(rows[0], dict) else rows[0]) == [6]


@pytest.mark.asyncio
async def test_the_readme_s_config_keeps_the_log_and_its_dashboard_behind_sign_in(log_and_demo, monkeypatch):
    """The README's first config, the logger wrapping Datasette included, served as it says."""
    from datasette.app import Datasette

    monkeypatch.chdir(os.path.dirname(str(log_and_demo[0])))  # its logger writes requests.db, relative: the log served
    if DATASETTE_MAJOR >= 1:
        ds = Datasette(files=[str(path) for path in log_and_demo], config=yaml.safe_load(readme_block("datasette.yaml")))
    else:
        ds = Datasette(files=[str(path) for path in log_and_demo], metadata=json.loads(readme_block("metadata.json")))
    urls = log_urls()
    statuses = {url: (await ds.client.get(url)).status_code for url in urls}
    assert statuses == {url: 403 for url in urls}
    cookies = signed_in(ds)
    for url in (f"/{LOG_NAME}/-/dashboard", f"/{LOG_NAME}/-/dashboard.json", sql_url(LOG_NAME)):
        assert (await ds.client.get(url, cookies=cookies)).status_code == 200, url
    assert (await ds.client.get("/demo/things.json")).status_code == 200


@pytest.mark.asyncio
async def test_another_signed_in_actor_is_refused_too(log_and_demo):
    ds = locked_down_datasette(log_and_demo)
    cookies = signed_in(ds, "alice")
    for url in (f"/{LOG_NAME}/readable_requests.json", sql_url(LOG_NAME), f"/{LOG_NAME}/{next(iter(QUERIES))}.json"):
        assert (await ds.client.get(url, cookies=cookies)).status_code == 403, url


@pytest.mark.asyncio
async def test_the_lockdown_hides_the_log_and_leaves_other_databases_open(log_and_demo):
    ds = locked_down_datasette(log_and_demo)
    assert (await ds.client.get("/demo/things.json")).status_code == 200
    assert await listed_databases(ds) == ["demo"]
    # root sees Datasette's _internal database too, on 0.65.
    assert {"demo", LOG_NAME} <= set(await listed_databases(ds, signed_in(ds)))


async def listed_databases(ds, cookies=None):
    """The databases the instance's index lists: 1.0 as a list under "databases", 0.65 as a dict by name."""
    index = (await ds.client.get("/.json", cookies=cookies)).json()
    names = [entry["name"] for entry in index["databases"]] if "databases" in index else list(index)
    return sorted(names)
