"""The ASGI apps the benchmarks serve or call: a hello-world and Datasette, each bare or logged.

Chosen by environment variables so that uvicorn can import them by name:
  BENCH_LOG_FILE   when set, wrap in the logger writing to this file
  (run in the 0.1.1 virtualenv, without this project on sys.path, the same name gives 0.1.1)
  BENCH_DB         for datasette_app: the database file to serve
"""
import os


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


def logged(app):
    log_file = os.environ.get("BENCH_LOG_FILE")
    if not log_file:
        return app
    from asgi_log_to_sqlite import AsgiLogToSqlite

    return AsgiLogToSqlite(app, log_file)


def _hello_app():
    return logged(hello)


def _datasette_app():
    if "BENCH_DB" not in os.environ:
        return None
    from datasette.app import Datasette

    return logged(Datasette([os.environ["BENCH_DB"]]).app())


hello_app = _hello_app()
datasette_app = _datasette_app()
