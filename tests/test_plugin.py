"""The plugin inside a real Datasette: order, options and the introspection pages."""
import importlib.metadata

import pytest
from datasette.app import Datasette

from asgi_test_middlewares import append_header_entries
from conftest import DATASETTE_MAJOR, datasette_kwargs
from datasette_configure_asgi.plugin.state import configured_chain


@pytest.mark.asyncio
async def test_first_entry_is_outermost_in_datasette():
    ds = Datasette(memory=True, **datasette_kwargs(append_header_entries("outer", "inner")))
    response = await ds.client.get("/-/versions.json")
    assert response.status_code == 200
    assert response.headers.get_list("x-order") == ["inner", "outer"]


@pytest.mark.asyncio
async def test_real_third_party_middleware_in_datasette():
    entries = [{"class": "asgi_cors.asgi_cors", "args": {"hosts": ["https://example.com"]}}]
    ds = Datasette(memory=True, **datasette_kwargs(entries))
    allowed = await ds.client.get("/-/versions.json", headers={"Origin": "https://example.com"})
    assert allowed.headers["access-control-allow-origin"] == "https://example.com"
    other = await ds.client.get("/-/versions.json", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.asyncio
async def test_path_prefix_applies_under_datasette():
    entries = [{"class": "asgi_test_middlewares.AppendHeader", "args": {"value": "json"}, "include_paths": ["/-/versions"]}]
    ds = Datasette(memory=True, **datasette_kwargs(entries))
    assert (await ds.client.get("/-/versions.json")).headers.get_list("x-order") == ["json"]
    assert (await ds.client.get("/-/plugins.json")).headers.get_list("x-order") == []


@pytest.mark.asyncio
async def test_introspection_json_lists_chain_with_secrets_masked(monkeypatch):
    monkeypatch.setenv("DCA_TEST_SECRET_VALUE", "s3cr3t-from-env")
    entries = [
        {"class": "asgi_cors.asgi_cors", "args": {"hosts": ["https://example.com"]}},
        {"class": "asgi_test_middlewares.AcceptsAnything", "args": {"api_key": "plain-secret", "label": {"$env": "DCA_TEST_SECRET_VALUE"}, "size": 3}, "scopes": ["http"]},
        {"class": "missing_package.Middleware", "enabled": False},
    ]
    ds = Datasette(memory=True, **datasette_kwargs(entries))
    response = await ds.client.get("/-/asgi-middleware.json")
    assert response.status_code == 200
    data = response.json()
    assert "plain-secret" not in response.text and "s3cr3t-from-env" not in response.text
    first, second = data["middleware"]
    assert first["position"] == 1 and first["target"] == "asgi_cors.asgi_cors"
    assert first["distribution"] == "asgi-cors" and first["version"] == "1.0.1"
    assert second["args"] == {"api_key": "***", "label": "***", "size": 3}
    assert second["scopes"] == ["http"]
    assert data["disabled"] == [{"config_index": 2, "target": "missing_package.Middleware"}]
    html = await ds.client.get("/-/asgi-middleware")
    assert html.status_code == 200
    assert "asgi_cors.asgi_cors" in html.text and "asgi-cors" in html.text
    assert "plain-secret" not in html.text and "s3cr3t-from-env" not in html.text


@pytest.mark.asyncio
async def test_page_names_the_distribution_of_a_class_in_a_namespace_package_shared_by_several():
    # opentelemetry/ is shipped by opentelemetry-api, -sdk, -instrumentation, -instrumentation-asgi...
    entries = [{"class": "opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware"},
               {"class": "starlette.middleware.gzip.GZipMiddleware"}]
    ds = Datasette(memory=True, **datasette_kwargs(entries))
    rows = (await ds.client.get("/-/asgi-middleware.json")).json()["middleware"]
    assert [(row["distribution"], row["version"]) for row in rows] == [
        ("opentelemetry-instrumentation-asgi", importlib.metadata.version("opentelemetry-instrumentation-asgi")),
        ("starlette", importlib.metadata.version("starlette")),
    ]


@pytest.mark.asyncio
async def test_introspection_needs_view_instance():
    kwargs = datasette_kwargs(append_header_entries("x"))
    # "allow": false at the top denies view-instance to everyone, on both lines.
    for holder in kwargs.values():
        holder["allow"] = False
    ds = Datasette(memory=True, **kwargs)
    assert (await ds.client.get("/-/asgi-middleware.json")).status_code == 403
    assert (await ds.client.get("/-/asgi-middleware")).status_code == 403


@pytest.mark.asyncio
async def test_no_config_means_no_middleware_and_an_empty_page():
    ds = Datasette(memory=True)
    response = await ds.client.get("/-/asgi-middleware.json")
    assert response.json() == {"source": None, "middleware": [], "disabled": []}


@pytest.mark.asyncio
async def test_rebuilds_reuse_the_checked_chain():
    ds = Datasette(memory=True, **datasette_kwargs(append_header_entries("a")))
    await ds.client.get("/-/versions.json")
    _, chain = configured_chain(ds)
    for _ in range(3):
        await ds.client.get("/-/versions.json")
        ds.app()
    assert configured_chain(ds)[1] is chain


@pytest.mark.skipif(DATASETTE_MAJOR < 1, reason="config= is the 1.0 way")
@pytest.mark.asyncio
async def test_metadata_plugins_still_read_on_1x():
    ds = Datasette(memory=True, metadata={"plugins": {"datasette-configure-asgi": append_header_entries("m")}})
    assert (await ds.client.get("/-/versions.json")).headers.get_list("x-order") == ["m"]
