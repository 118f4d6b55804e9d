"""Middleware from PyPI, as a user configures it: each alone and all stacked, in Datasette on this line, and the
stack under wrap() around a Starlette app served by a real uvicorn. Each test checks what a user would notice."""
import json
import re
import sqlite3
import uuid

import httpx
import pytest
import sentry_sdk
from datasette.app import Datasette
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pypi_stack
from conftest import datasette_kwargs, free_port, running_server, subprocess_env

UUID_HEX = re.compile(r"^[0-9a-f]{32}$")
CSRF_SECRET = "csrf-secret-for-the-tests"


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    path = tmp_path_factory.mktemp("pypi") / "data.db"
    conn = sqlite3.connect(path)
    conn.execute("create table items (id integer primary key, name text)")
    conn.executemany("insert into items (name) values (?)", [(f"item {n}",) for n in range(50)])
    conn.commit()
    conn.close()
    return path


@pytest.fixture(scope="module")
def spans():
    """OpenTelemetry's spans, kept in memory: the global provider is how a user points the middleware at an exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    exporter.shutdown()  # the provider cannot be unset; later spans are dropped


@pytest.fixture
def observed(spans, monkeypatch):
    """What Sentry and OpenTelemetry received during one test."""
    monkeypatch.setenv(pypi_stack.CSRF_SECRET_VARIABLE, CSRF_SECRET)
    transactions = []
    sentry_sdk.init(transport=pypi_stack.recording_transport(transactions), **pypi_stack.SENTRY_OPTIONS)
    spans.clear()
    yield {"transactions": transactions, "spans": spans}
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


class Site:
    """A Datasette with the plugin configured, asked over ASGI as a browser or a proxy would."""

    def __init__(self, database, entries):
        self.app = Datasette([str(database)], **datasette_kwargs(entries)).app()

    async def request(self, path, *, method="GET", scheme="http", client=("127.0.0.1", 50000), **options):
        transport = httpx.ASGITransport(app=self.app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://localhost") as http:
            return await http.request(method, path, **options)


async def asgi_cors_adds_its_header_for_a_listed_origin(site, observed):
    listed = await site.request("/data/items.json", headers={"origin": "https://example.com"})
    other = await site.request("/data/items.json", headers={"origin": "https://evil.example"})
    assert listed.headers["access-control-allow-origin"] == "https://example.com"
    assert "access-control-allow-origin" not in other.headers


async def starlette_cors_answers_a_preflight(site, observed):
    preflight = {"origin": "https://example.com", "access-control-request-method": "GET"}
    allowed = await site.request("/data/items.json", method="OPTIONS", headers=preflight)
    refused = await site.request("/data/items.json", method="OPTIONS", headers={**preflight, "origin": "https://evil.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://example.com"
    assert refused.status_code == 400 and refused.text == "Disallowed CORS origin"


async def gzip_compresses_a_large_response(site, observed):
    response = await site.request("/data/items.json", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert int(response.headers["content-length"]) < len(response.content)
    assert len(response.json()["rows"]) == 50


async def trusted_host_refuses_another_host(site, observed):
    assert (await site.request("/data/items.json")).status_code == 200
    refused = await site.request("/data/items.json", headers={"host": "attacker.example"})
    assert refused.status_code == 400 and refused.text == "Invalid host header"


async def https_redirect_sends_http_to_https(site, observed):
    plain = await site.request("/data/items.json?_size=5")
    assert plain.status_code == 307
    assert plain.headers["location"] == "https://localhost/data/items.json?_size=5"
    assert (await site.request("/data/items.json", scheme="https")).status_code == 200


async def brotli_compresses_for_br(site, observed):
    response = await site.request("/data/items.json", headers={"accept-encoding": "br"})
    assert response.headers["content-encoding"] == "br"
    assert len(response.json()["rows"]) == 50


async def sentry_records_a_transaction_per_request(site, observed):
    await site.request("/data/items.json")
    (transaction,) = observed["transactions"]
    assert transaction["name"].endswith("/data/items.json") and transaction["status"] == "ok"


async def opentelemetry_records_a_span_per_request(site, observed):
    await site.request("/data/items.json")
    (span,) = [s for s in observed["spans"].get_finished_spans() if s.name == "GET /data/items.json"]
    assert span.attributes["http.status_code"] == 200
    assert span.attributes["http.target"] == "/data/items.json"


async def proxy_headers_trust_only_the_listed_proxy(site, observed):
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"}
    # Datasette's alternate link is absolute: it shows the scheme Datasette believes the request had.
    trusted = await site.request("/data/items", headers=forwarded)
    untrusted = await site.request("/data/items", headers=forwarded, client=("198.51.100.7", 50000))
    assert "https://localhost/data/items.json" in trusted.headers["link"]
    assert "http://localhost/data/items.json" in untrusted.headers["link"]


async def asgi_csrf_sets_its_cookie_and_refuses_a_post_without_the_token(site, observed):
    page = await site.request("/data/items.json")
    token = page.cookies["outer_csrf"]
    cookie = {"cookie": f"outer_csrf={token}"}
    forged = await site.request("/data/items", method="POST", data={"name": "x"}, headers=cookie)
    genuine = await site.request("/data/items", method="POST", content=b"{}",
                                 headers={**cookie, "x-csrftoken": token, "content-type": "text/plain"})
    assert forged.status_code == 403 and forged.text == "form-urlencoded POST field did not match cookie"
    # Past asgi-csrf, Datasette answers for itself (0.65 runs its own CSRF check, with its own cookie).
    assert genuine.text != forged.text


async def correlation_id_is_made_or_kept(site, observed):
    made = await site.request("/data/items.json")
    given = uuid.uuid4().hex
    kept = await site.request("/data/items.json", headers={"x-request-id": given})
    assert UUID_HEX.match(made.headers["x-request-id"])
    assert kept.headers["x-request-id"] == given


async def request_id_is_made_or_kept(site, observed):
    made = await site.request("/data/items.json")
    kept = await site.request("/data/items.json", headers={"request-id": "upstream-17"})
    assert uuid.UUID(made.headers["request-id"]).version == 4
    assert kept.headers["request-id"] == "upstream-17"


async def secure_adds_its_security_headers(site, observed):
    headers = (await site.request("/data/items.json")).headers
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert headers["x-frame-options"] == "SAMEORIGIN"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"].startswith("default-src 'self'")


async def sage_adds_its_security_headers(site, observed):
    headers = (await site.request("/data/items.json")).headers
    assert headers["x-frame-options"] == "SAMEORIGIN"
    # Appended after any the app set (Datasette 1.0 sets no-referrer).
    assert headers.get_list("referrer-policy")[-1] == "strict-origin-when-cross-origin"
    assert headers["x-content-type-options"] == "nosniff"


async def starlette_context_answers_a_request_id(site, observed):
    assert UUID_HEX.match((await site.request("/data/items.json")).headers["x-request-id"])


ALONE = [
    ({"class": "asgi_cors.asgi_cors", "args": {"hosts": ["https://example.com"]}}, asgi_cors_adds_its_header_for_a_listed_origin),
    ({"class": "starlette.middleware.cors.CORSMiddleware", "args": {"allow_origins": ["https://example.com"]}},
     starlette_cors_answers_a_preflight),
    ({"class": "starlette.middleware.gzip.GZipMiddleware", "args": {"minimum_size": 500}}, gzip_compresses_a_large_response),
    ({"class": "starlette.middleware.trustedhost.TrustedHostMiddleware", "args": {"allowed_hosts": ["localhost"]}},
     trusted_host_refuses_another_host),
    ({"class": "starlette.middleware.httpsredirect.HTTPSRedirectMiddleware"}, https_redirect_sends_http_to_https),
    ({"class": "brotli_asgi.BrotliMiddleware", "args": {"minimum_size": 500}}, brotli_compresses_for_br),
    ({"class": "sentry_sdk.integrations.asgi.SentryAsgiMiddleware", "args": {"transaction_style": "url"}},
     sentry_records_a_transaction_per_request),
    ({"class": "opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware"}, opentelemetry_records_a_span_per_request),
    ({"class": "uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware", "args": {"trusted_hosts": ["127.0.0.1"]}},
     proxy_headers_trust_only_the_listed_proxy),
    ({"class": "asgi_csrf.asgi_csrf", "args": {"cookie_name": "outer_csrf", "always_set_cookie": True,
                                               "signing_secret": {"$env": pypi_stack.CSRF_SECRET_VARIABLE}}},
     asgi_csrf_sets_its_cookie_and_refuses_a_post_without_the_token),
    ({"class": "asgi_correlation_id.CorrelationIdMiddleware"}, correlation_id_is_made_or_kept),
    ({"class": "asgi_request_id.RequestIDMiddleware"}, request_id_is_made_or_kept),
    ({"class": "secure.middleware.SecureASGIMiddleware"}, secure_adds_its_security_headers),
    ({"class": "asgi_sage.middleware.SageMiddleware"}, sage_adds_its_security_headers),
    ({"class": "pypi_stack.starlette_context_with_request_id"}, starlette_context_answers_a_request_id),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("entry,behaves", [pytest.param(e, b, id=e["class"]) for e, b in ALONE])
async def test_each_alone_in_datasette(database, observed, entry, behaves):
    await behaves(Site(database, [entry]), observed)


def test_every_middleware_of_the_stack_is_tried_alone():
    assert sorted(entry["class"] for entry in pypi_stack.stack()) == sorted(entry["class"] for entry, _ in ALONE)


@pytest.mark.asyncio
async def test_all_stacked_in_datasette(database, observed):
    site = Site(database, pypi_stack.stack())
    # A browser's request, through a trusted proxy that ended TLS.
    browser = {"x-forwarded-proto": "https", "origin": "https://example.com", "accept-encoding": "br"}
    response = await site.request("/data/items.json", headers=browser)
    assert response.status_code == 200
    assert len(response.json()["rows"]) == 50
    headers = response.headers
    assert headers["content-encoding"] == "br"
    assert headers["access-control-allow-origin"] == "https://example.com"
    assert headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert headers["x-content-type-options"] == "nosniff"
    # asgi-sage hardened the cookie asgi-csrf (inside it) set.
    assert re.search(r"^outer_csrf=.*; secure; httponly$", headers["set-cookie"]), headers["set-cookie"]
    assert UUID_HEX.match(headers["x-correlation-id"]) and UUID_HEX.match(headers["x-request-id"])
    assert uuid.UUID(headers["request-id"])
    token = response.cookies["outer_csrf"]
    assert [t["name"].endswith("/data/items.json") for t in observed["transactions"]] == [True]
    assert "GET /data/items.json" in [span.name for span in observed["spans"].get_finished_spans()]

    gzipped = await site.request("/data/items.json", headers={**browser, "accept-encoding": "gzip"})
    assert gzipped.headers["content-encoding"] == "gzip"
    assert (await site.request("/data/items.json")).status_code == 307  # no proxy said https
    assert (await site.request("/data/items.json", headers={**browser, "host": "attacker.example"})).status_code == 400
    forged = await site.request("/data/items", method="POST", data={"name": "x"},
                                headers={**browser, "cookie": f"outer_csrf={token}"})
    assert forged.status_code == 403
    # asgi-cors applies to /-/ pages only, Starlette's CORS to /data only.
    versions = await site.request("/-/versions.json", headers=browser)
    assert versions.headers.get_list("access-control-allow-origin") == ["https://example.com"]

    page = (await site.request("/-/asgi-middleware.json", headers=browser)).json()
    assert [row["target"] for row in page["middleware"]] == [entry["class"] for entry in pypi_stack.stack()]
    distributions = {row["target"]: row["distribution"] for row in page["middleware"]}
    assert distributions["opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware"] == "opentelemetry-instrumentation-asgi"
    assert distributions["secure.middleware.SecureASGIMiddleware"] == "secure"
    assert CSRF_SECRET not in json.dumps(page)
    csrf_row = [row for row in page["middleware"] if row["target"] == "asgi_csrf.asgi_csrf"][0]
    # Strings under secret-looking names are masked (cookie_name too); the flag is shown.
    assert csrf_row["args"] == {"cookie_name": "***", "always_set_cookie": True, "signing_secret": "***"}


def test_all_stacked_under_wrap_around_starlette_with_uvicorn():
    port = free_port()
    command = ["python", "-m", "uvicorn", "--factory", "pypi_stack:create_app", "--host", "127.0.0.1",
               "--port", port, "--no-access-log"]
    env = subprocess_env(**{pypi_stack.CSRF_SECRET_VARIABLE: CSRF_SECRET})
    with running_server(command, port, env=env):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            browser = {"x-forwarded-proto": "https", "origin": "https://example.com"}
            brotli = http.get("/items", headers={**browser, "accept-encoding": "br"})
            gzipped = http.get("/items", headers={**browser, "accept-encoding": "gzip"})
            plain = http.get("/items")
            wrong_host = http.get("/items", headers={**browser, "host": "attacker.example"})
            forged = http.post("/items", data={"name": "x"},
                               headers={**browser, "cookie": f"outer_csrf={brotli.cookies['outer_csrf']}"})
            observed = http.get("/observed", headers=browser).json()
    assert brotli.status_code == 200 and brotli.json()["scheme"] == "https"
    assert brotli.headers["content-encoding"] == "br" and len(brotli.json()["items"]) == 50
    assert gzipped.headers["content-encoding"] == "gzip"
    assert brotli.headers["access-control-allow-origin"] == "https://example.com"
    assert brotli.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert brotli.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert brotli.headers["set-cookie"].endswith("; secure; httponly")
    assert UUID_HEX.match(brotli.headers["x-correlation-id"]) and UUID_HEX.match(brotli.headers["x-request-id"])
    assert uuid.UUID(brotli.headers["request-id"])
    assert plain.status_code == 307 and plain.headers["location"] == f"https://127.0.0.1:{port}/items"
    assert wrong_host.status_code == 400
    assert forged.status_code == 403
    # Only what reached Sentry (inside the redirect and the host check) is a transaction; the forged POST is refused.
    assert observed["transactions"] == [
        {"name": f"https://127.0.0.1:{port}/items", "status": "ok"},
        {"name": f"https://127.0.0.1:{port}/items", "status": "ok"},
        {"name": f"https://127.0.0.1:{port}/items", "status": "permission_denied"},
    ]
    assert "GET /items" in observed["spans"]

