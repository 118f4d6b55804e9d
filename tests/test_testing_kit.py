"""The author's kit: check_middleware passes real well-behaved middleware and names what the others break."""
import asgi_cors
import pytest
from starlette.middleware.gzip import GZipMiddleware

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
