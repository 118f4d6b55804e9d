"""The author's kit: check_middleware passes real well-behaved middleware and names what the others break."""
import queue
import threading

import asgi_cors
import pytest
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.httpsredirect import HTTPSRedirectMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from asgi_test_middlewares import AppendHeader, LifespanUnsafe, StartsThread, SwallowsErrors
from datasette_configure_asgi.testing import MiddlewareCheckFailed, check_middleware


def test_asgi_cors_from_pypi_follows_the_protocol():
    # With a list of hosts, asgi-cors adds headers only for a matching Origin; without one nothing changes.
    check_middleware(asgi_cors.asgi_cors, hosts=["https://example.com"])


def test_asgi_cors_allow_all_adds_its_header_to_every_response():
    with pytest.raises(MiddlewareCheckFailed, match="access-control-allow-origin"):
        check_middleware(asgi_cors.asgi_cors, allow_all=True)
    check_middleware(asgi_cors.asgi_cors, allow_all=True, changes_headers=["Access-Control-Allow-Origin"])


def test_asgi_cors_with_an_origin_changes_only_its_own_headers():
    check_middleware(
        asgi_cors.asgi_cors,
        allow_all=True,
        request_headers=[(b"origin", b"http://example.com")],
        changes_headers={b"access-control-allow-origin", b"access-control-allow-methods",
                         b"access-control-allow-headers", b"access-control-max-age", b"vary"},
    )


def test_a_header_changing_middleware_must_say_so():
    with pytest.raises(MiddlewareCheckFailed) as failure:
        check_middleware(AppendHeader, name="x-extra", value="1")
    assert "http_unchanged: headers" in str(failure.value)
    assert "pass changes_headers=" in str(failure.value)
    check_middleware(AppendHeader, name="x-extra", value="1", changes_headers={b"x-extra"})


def test_gzip_passes_small_bodies_through():
    check_middleware(GZipMiddleware, minimum_size=10_000)


@pytest.mark.parametrize(
    "factory,expected",
    [
        (StartsThread, "cheap_init: constructing the middleware twice started 2 thread(s)"),
        (SwallowsErrors, "exceptions: the app raised, but the middleware swallowed the exception"),
        (LifespanUnsafe, "lifespan: raised KeyError: 'method'"),
    ],
    ids=["starts-thread", "swallows-errors", "lifespan-unsafe"],
)
def test_each_broken_property_is_named(factory, expected):
    with pytest.raises(MiddlewareCheckFailed) as failure:
        check_middleware(factory)
    message = str(failure.value)
    assert message.startswith(f"{factory.__qualname__} does not follow the middleware protocol:")
    assert expected in message


@pytest.mark.asyncio
async def test_callable_from_inside_a_running_loop():
    # pytest-asyncio runs this test on a loop; the kit must not try to nest asyncio.run().
    with pytest.raises(MiddlewareCheckFailed, match="swallowed"):
        check_middleware(SwallowsErrors)


class Neighbour:
    """Threads unrelated to the middleware, which start or end one each time a constructor asks, on another thread."""

    def __init__(self, action, spare=8):
        self.action = action
        self.spawned = []
        self.requests = queue.Queue()
        for _ in range(spare if action == "end" else 0):
            self.start_one()
        self.worker = threading.Thread(target=self.serve)
        self.worker.start()

    def start_one(self):
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        self.spawned.append((stop, thread))

    def serve(self):
        while (done := self.requests.get()) is not None:
            if self.action == "start":
                self.start_one()
            elif self.spawned:
                stop, thread = self.spawned.pop()
                stop.set()
                thread.join()
            done.set()

    def act_now(self):
        done = threading.Event()
        self.requests.put(done)
        assert done.wait(5)

    def close(self):
        self.requests.put(None)
        self.worker.join()
        for stop, thread in self.spawned:
            stop.set()
            thread.join()


@pytest.fixture
def neighbour(request):
    beside = Neighbour(request.param)
    yield beside
    beside.close()


class CheapBesideANeighbour:
    def __init__(self, app, neighbour):
        self.app = app
        neighbour.act_now()

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


class StartsThreadBesideANeighbour(StartsThread):
    def __init__(self, app, neighbour):
        neighbour.act_now()
        super().__init__(app)


@pytest.mark.parametrize("neighbour", ["start"], indirect=True)
def test_a_thread_started_elsewhere_during_construction_is_not_blamed_on_the_middleware(neighbour):
    check_middleware(CheapBesideANeighbour, neighbour=neighbour)


@pytest.mark.parametrize("neighbour", ["end"], indirect=True)
def test_threads_ending_elsewhere_during_construction_do_not_hide_the_ones_it_starts(neighbour):
    with pytest.raises(MiddlewareCheckFailed) as failure:
        check_middleware(StartsThreadBesideANeighbour, neighbour=neighbour)
    assert "cheap_init: constructing the middleware twice started 2 thread(s)" in str(failure.value)


def test_a_middleware_that_answers_itself_is_told_how_to_be_checked():
    with pytest.raises(MiddlewareCheckFailed) as failure:
        check_middleware(HTTPSRedirectMiddleware)
    message = str(failure.value)
    assert "http_unchanged: the middleware answered 307 (location https://testserver/check) itself instead of calling the app" in message
    assert "websocket: the middleware answered 307 (location wss://testserver/ws) itself" in message
    assert "swallowed" not in message  # it never called the app, so nothing was swallowed
    assert 'hint: the kit checks what a middleware does to requests it passes on' in message
    assert 'scope={"scheme": "https"}' in message


def test_a_redirecting_middleware_is_checked_with_a_request_it_lets_through():
    check_middleware(HTTPSRedirectMiddleware, scope={"scheme": "https"})


def test_a_host_check_is_checked_with_a_host_it_allows():
    with pytest.raises(MiddlewareCheckFailed, match="answered 400 itself"):
        check_middleware(TrustedHostMiddleware, allowed_hosts=["example.com"])
    check_middleware(TrustedHostMiddleware, allowed_hosts=["example.com"], request_headers=[(b"host", b"example.com")])
