"""Order, options and rebuild cost of the chain, through real requests."""
import httpx
import pytest
from asgiref.testing import ApplicationCommunicator

import asgi_test_middlewares
from asgi_test_middlewares import append_header_entries
from datasette_configure_asgi import chain_for, wrap


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def get(app, path="/"):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        return await client.get(path)


@pytest.mark.asyncio
async def test_first_entry_is_outermost():
    response = await get(wrap(hello, append_header_entries("first", "second")))
    # The innermost middleware appends its header first; the outermost appends last.
    assert response.headers.get_list("x-order") == ["second", "first"]


@pytest.mark.asyncio
async def test_include_and_exclude_paths():
    app = wrap(
        hello,
        [
            {"class": "asgi_test_middlewares.AppendHeader", "args": {"value": "api"}, "include_paths": ["/api/"]},
            {"class": "asgi_test_middlewares.AppendHeader", "args": {"value": "not-static"}, "exclude_paths": ["/static/", "/api/private"]},
        ],
    )
    assert (await get(app, "/api/x")).headers.get_list("x-order") == ["not-static", "api"]
    assert (await get(app, "/api/private/x")).headers.get_list("x-order") == ["api"]
    assert (await get(app, "/static/app.css")).headers.get_list("x-order") == []
    assert (await get(app, "/")).headers.get_list("x-order") == ["not-static"]


@pytest.mark.asyncio
async def test_scopes_keep_lifespan_away_from_a_lifespan_unsafe_middleware():
    entries = [{"class": "asgi_test_middlewares.LifespanUnsafe", "scopes": ["http"]}]
    communicator = ApplicationCommunicator(wrap(hello, entries), {"type": "lifespan", "asgi": {"version": "3.0"}})
    await communicator.send_input({"type": "lifespan.startup"})
    assert await communicator.receive_output() == {"type": "lifespan.startup.complete"}
    await communicator.send_input({"type": "lifespan.shutdown"})
    assert await communicator.receive_output() == {"type": "lifespan.shutdown.complete"}
    # Without "scopes" the same middleware breaks startup.
    unsafe = wrap(hello, [{"class": "asgi_test_middlewares.LifespanUnsafe"}])
    communicator = ApplicationCommunicator(unsafe, {"type": "lifespan", "asgi": {"version": "3.0"}})
    await communicator.send_input({"type": "lifespan.startup"})
    with pytest.raises(KeyError):
        await communicator.receive_output()


def test_resolution_runs_once_per_config_and_rebuild_is_only_constructors():
    entries = append_header_entries("a", "b") + [{"class": "asgi_test_middlewares.Counting", "args": {"value": "c"}}]
    first = chain_for(entries)
    assert chain_for([dict(e) for e in entries]) is first  # an equal config is not resolved again
    assert chain_for(entries[:2]) is not first
    before = asgi_test_middlewares.CONSTRUCTED["count"]
    for _ in range(3):
        first.wrap(hello)
    assert asgi_test_middlewares.CONSTRUCTED["count"] == before + 3


def test_empty_list_returns_the_app_itself():
    assert wrap(hello, []) is hello
