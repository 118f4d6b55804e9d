"""Any log, same Datasette: a log written in front of the Starlette example (route templates), one
in front of the Django example (paths only) and one imported from an nginx access log each open with
readable tables, every ready-made query answering, and every dashboard panel given its rows.
tests/test_dashboard_browser.py draws the same three dashboards in Chromium."""
import pytest
from datasette.app import Datasette

from asgi_log_to_sqlite.datasette.dashboard import PANELS
from asgi_log_to_sqlite.datasette.queries import QUERIES

from framework_logs import FRAMEWORKS, framework_log, imported_log

KINDS = (*FRAMEWORKS, "nginx")
# An access log carries no durations: its latency panels have nothing to draw.
NO_ROWS = {"nginx": {"latency_over_time", "slowest_routes"}}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("any-log")
    found = {name: framework_log(folder / f"{name}.db", name) for name in FRAMEWORKS}
    found["nginx"] = imported_log(folder)
    return found


async def get(ds, url):
    response = await ds.client.get(url)
    assert response.status_code == 200, (url, response.text[:500])
    return response.json()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_its_requests_read_as_text(logs, kind):
    ds = Datasette(files=[logs[kind]])
    rows = (await get(ds, f"/{kind}/readable_requests.json?_shape=objects&_size=max"))["rows"]
    assert rows and all(row["method"] == "GET" and row["path"].startswith("/") for row in rows)
    statuses = {row["http_status"] for row in rows}
    assert 200 in statuses and (statuses & {404, 500}), statuses
    assert {row["is_bot"] for row in rows} == {0, 1}
    routes = {row["route"] for row in rows}
    if kind == "starlette":
        assert "/items/{id}" in routes and "/" in routes
    else:
        assert routes == {None}  # Django and access logs give no route template: the path stands in


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_every_ready_made_query_answers(logs, kind):
    ds = Datasette(files=[logs[kind]])
    empty = []
    for name in QUERIES:
        rows = (await get(ds, f"/{kind}/{name}.json?_shape=objects"))["rows"]
        if not rows:
            empty.append(name)
    # An access log has no durations, and its days' salts were gone before the import (no visitors).
    allowed = {"visitors_by_day", "latency_over_time", "latency_by_day", "slowest_routes"} if kind == "nginx" else set()
    assert set(empty) <= allowed, empty
    top = (await get(ds, f"/{kind}/top_routes.json?_shape=objects"))["rows"]
    if kind == "starlette":
        assert top[0]["route"] == "/items/{id}" and top[0]["kind"] == "route"
    else:
        assert {row["kind"] for row in top} == {"path"}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_every_dashboard_panel_gets_its_rows(logs, kind):
    ds = Datasette(files=[logs[kind]])
    for period in ("range=7d", "range=30d"):
        data = await get(ds, f"/{kind}/-/dashboard.json?{period}")
        assert not data["empty"]
        assert {panel: result["error"] for panel, result in data["panels"].items() if result["error"]} == {}
        without = {panel for panel, result in data["panels"].items() if not result["rows"]}
        assert without <= NO_ROWS.get(kind, set()), (period, without)
        assert set(data["panels"]) == set(PANELS)
