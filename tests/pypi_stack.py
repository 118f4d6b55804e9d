"""Fifteen middlewares from PyPI as one config, what a user writes to use them, and a Starlette app wrapped in them.

Imported by tests/test_pypi_middleware.py, and served by the uvicorn it starts: ``--factory pypi_stack:create_app``.
"""
import os
import uuid

import sentry_sdk
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sentry_sdk.transport import Transport
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette_context.middleware import RawContextMiddleware
from starlette_context.plugins import RequestIdPlugin

from datasette_configure_asgi import wrap

CSRF_SECRET_VARIABLE = "DCA_TEST_CSRF_SECRET"


def starlette_context_with_request_id(app):
    """starlette-context's plugins are objects, which a JSON or YAML config cannot hold: a user names a factory like this."""
    return RawContextMiddleware(app, plugins=(RequestIdPlugin(),))


def stack(data_path="/data", allowed_hosts=("localhost",)):
    """Every middleware, outermost first, in an order where each can do its job."""
    return [
        # Outermost, so that what follows sees the scheme and client the proxy forwarded.
        {"class": "uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware", "args": {"trusted_hosts": ["127.0.0.1"]}},
        {"class": "starlette.middleware.trustedhost.TrustedHostMiddleware", "args": {"allowed_hosts": list(allowed_hosts)}},
        {"class": "starlette.middleware.httpsredirect.HTTPSRedirectMiddleware"},
        {"class": "sentry_sdk.integrations.asgi.SentryAsgiMiddleware", "args": {"transaction_style": "url"}},
        {"class": "opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware"},
        # starlette-context's plugin answers X-Request-ID, so the correlation id takes another header.
        {"class": "asgi_correlation_id.CorrelationIdMiddleware", "args": {"header_name": "X-Correlation-ID"}},
        {"class": "asgi_request_id.RequestIDMiddleware"},
        {"class": "pypi_stack.starlette_context_with_request_id"},
        {"class": "secure.middleware.SecureASGIMiddleware"},
        # secure 2.0.1 sets the security headers; asgi-sage only hardens cookies (secure; httponly). secure
        # mis-replaces a header already there when several of its own are (an index shift), so each keeps its own.
        {"class": "asgi_sage.middleware.SageMiddleware",
         "args": {"frame_options": None, "strict_transport_security": False, "referrer_policy": None,
                  "content_type_nosniff": False}},
        {"class": "asgi_cors.asgi_cors", "args": {"hosts": ["https://example.com"]}, "include_paths": ["/-/"]},
        {"class": "starlette.middleware.cors.CORSMiddleware", "args": {"allow_origins": ["https://example.com"]},
         "include_paths": [data_path]},
        {"class": "asgi_csrf.asgi_csrf",
         "args": {"cookie_name": "outer_csrf", "always_set_cookie": True, "signing_secret": {"$env": CSRF_SECRET_VARIABLE}}},
        # Brotli for br, GZip (inside) for gzip: brotli's own gzip fallback would compress twice.
        {"class": "brotli_asgi.BrotliMiddleware", "args": {"minimum_size": 500, "gzip_fallback": False}},
        {"class": "starlette.middleware.gzip.GZipMiddleware", "args": {"minimum_size": 500}},
    ]


def create_app():
    """A Starlette app in the stack, with Sentry and OpenTelemetry recording in memory, shown at /observed."""
    transactions = []
    sentry_sdk.init(transport=recording_transport(transactions), **SENTRY_OPTIONS)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)

    async def items(request):
        return JSONResponse({"method": request.method, "scheme": request.url.scheme,
                             "items": [{"id": n, "name": f"item {n}"} for n in range(50)]})

    async def observed(request):
        return JSONResponse({"transactions": transactions, "spans": [span.name for span in spans.get_finished_spans()]})

    os.environ.setdefault(CSRF_SECRET_VARIABLE, uuid.uuid4().hex)
    app = Starlette(routes=[Route("/items", items, methods=["GET", "POST"]), Route("/observed", observed)])
    return wrap(app, stack(data_path="/items", allowed_hosts=("127.0.0.1", "localhost")))


# Sentry as a test wants it: every transaction sent, no integrations patching the process, no background threads.
SENTRY_OPTIONS = dict(
    dsn="https://public@sentry.example/1",
    traces_sample_rate=1.0,
    default_integrations=False,
    auto_enabling_integrations=False,
    enable_backpressure_handling=False,
    auto_session_tracking=False,
)


def recording_transport(transactions):
    """A Sentry transport that keeps the name and status of each transaction instead of sending it."""

    class Recording(Transport):
        def capture_envelope(self, envelope):
            for item in envelope.items:
                event = item.payload.json or {}
                if item.type == "transaction":
                    transactions.append({"name": event.get("transaction"),
                                         "status": event.get("contexts", {}).get("trace", {}).get("status")})

    return Recording()
