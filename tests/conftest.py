import asyncio
import contextlib
import json
import os
import pathlib
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import settings
from datasette.version import __version__ as DATASETTE_VERSION

from asgi_log_to_sqlite import writer as log_writer

# Property tests: a few hundred examples in the suite; HYPOTHESIS_PROFILE=slow for the long run.
settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("slow", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
BIN = pathlib.Path(sys.executable).parent
KEY = "datasette-configure-asgi"
DATASETTE_MAJOR = int(DATASETTE_VERSION.split(".")[0])

only_1x = pytest.mark.skipif(DATASETTE_MAJOR < 1, reason="Datasette 1.0 reads plugin config from -c/-s")
only_065 = pytest.mark.skipif(DATASETTE_MAJOR >= 1, reason="Datasette 0.65 behaviour")


def subprocess_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT)])
    env.update(extra)
    return env


def run(*args, timeout=60, env=None, cwd=None):
    """Run a command from this virtualenv (datasette, python, ...) and capture its output."""
    command = [str(BIN / args[0]), *map(str, args[1:])]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env or subprocess_env(), cwd=cwd or ROOT
    )


def datasette_kwargs(entries):
    """Datasette() keyword arguments that configure the plugin where this Datasette line reads it."""
    plugins = {"plugins": {KEY: entries}}
    return {"config": plugins} if DATASETTE_MAJOR >= 1 else {"metadata": plugins}


def config_file_args(tmp_path, entries, name="plugins.json"):
    """CLI options for datasette serve/--get that configure the plugin on this line."""
    path = tmp_path / name
    path.write_text(json.dumps({"plugins": {KEY: entries}}))
    return ["-c", str(path)] if DATASETTE_MAJOR >= 1 else ["-m", str(path)]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(command, port, env=None, cwd=None, ready_timeout=30, output=None):
    """Start a real server process, wait until it accepts connections, stop it afterwards.

    Its output goes to a pipe, or to the file ``output`` for a server that writes a line per
    request (a pipe nobody reads would fill and stall it).
    """
    sink = open(output, "w") if output is not None else subprocess.PIPE
    process = subprocess.Popen(
        [str(BIN / command[0]), *map(str, command[1:])],
        stdout=sink, stderr=subprocess.STDOUT, text=True,
        env=env or subprocess_env(), cwd=cwd or ROOT,
    )
    if output is not None:
        sink.close()  # the child holds its own copy
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if process.poll() is not None:
                said = process.stdout.read() if process.stdout else pathlib.Path(output).read_text()
                raise AssertionError(f"server exited with {process.returncode}:\n{said}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not listen on {port} within {ready_timeout} s")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


# ---- the logger: writers closed after each test, and the helpers its test modules share ------------

@pytest.fixture(autouse=True)
def close_log_writers():
    """Close every log writer the test opened in this process, and fail it if a writer thread outlives that.

    Otherwise each test's writer threads and connections would live on until the interpreter exits.
    """
    yield
    log_writer.close_all(timeout=30)
    with log_writer._writers_lock:
        log_writer._writers.clear()
    alive = [t.name for t in threading.enumerate() if t.name.startswith("asgi-log-to-sqlite ")]
    if alive:
        pytest.fail(f"log writer thread(s) still running after close_all(): {alive}")


async def ok(scope, receive, send):
    """The smallest app: 200, text/plain, "ok"."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def scope_for(path, agent=b"tests", referer=None):
    """An HTTP GET scope for ``path``, as a server would build it."""
    headers = [(b"host", b"testserver"), (b"user-agent", agent)]
    if referer is not None:
        headers.append((b"referer", referer))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": None, "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}


async def serve(app, scopes):
    """Call the app once per scope, as a server would; returns the statuses the server saw."""
    statuses = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for n, scope in enumerate(scopes):
        await app(scope, receive, send)
        if n % 500 == 0:
            await asyncio.sleep(0)
    return statuses


def write_one_request(path, page="/a"):
    """One GET of ``page`` through a Writer of its own, flushed and closed: a later writer of the file."""
    from asgi_log_to_sqlite.record import Shaper
    from asgi_log_to_sqlite.writer import Writer

    writer = Writer(str(path))
    try:
        now = time.perf_counter()
        scope = {"type": "http", "method": "GET", "path": page, "query_string": b"", "headers": []}
        writer.submit((Shaper(), scope, now, now + 0.002, None, 200, [], 10, 0, 0))
        assert writer.flush()
    finally:
        writer.close()


def checked(conn):
    """``conn`` after SQLite's integrity and foreign key checks have passed on it."""
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    return conn


def count_prefix(conn, prefix):
    """Rows logged for paths under ``prefix`` (``/during`` counts ``/during/...``)."""
    return conn.execute("select count(*) from request_log r join paths p on p.id = r.path_id where p.name like ?",
                        (prefix + "/%",)).fetchone()[0]


def rows(path, sql="select * from readable_requests order by id"):
    """The log's rows as dicts, readable_requests by default."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()
