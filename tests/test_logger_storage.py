"""What a logged request costs on disk, and that rows still queued at exit reach it.

(tests/test_docs.py checks that docs/schema.md names every stored column.)
"""
import asyncio
import subprocess
import sys
import textwrap

import sqlite_utils

from asgi_log_to_sqlite import AsgiLogToSqlite
from conftest import subprocess_env

# 0.1.1 stored this workload (100k requests over 200 paths and 50 user agents) at 57.9 bytes per request.
BYTES_PER_REQUEST_0_1_1 = 57.9
REQUESTS = 100_000


async def varied(scope, receive, send):
    """200 or 404, HTML or JSON, a body whose size follows the path: rows that differ as real ones do."""
    await send({"type": "http.response.start", "status": 200 if scope["path"] != "/missing" else 404,
                "headers": [(b"content-type", b"text/html; charset=utf-8" if len(scope["path"]) % 2 else b"application/json")]})
    await send({"type": "http.response.body", "body": b"x" * (len(scope["path"]) * 37)})


def workload(count):
    agents = [f"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/{100 + i}.0".encode() for i in range(50)]
    referers = [f"https://example.com/page/{i}".encode() for i in range(20)]
    languages = [b"en-GB,en;q=0.9", b"de-DE,de;q=0.8", b"fr-FR"]
    for i in range(count):
        headers = [(b"host", b"example.com"), (b"user-agent", agents[i % 50]), (b"accept-language", languages[i % 3])]
        if i % 2:
            headers.append((b"referer", referers[i % 20]))
        yield {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET" if i % 10 else "POST",
            "scheme": "https", "path": "/missing" if i % 97 == 0 else f"/section/{i % 200}",
            "raw_path": b"", "query_string": f"page={i % 10}".encode() if i % 4 == 0 else b"", "root_path": "",
            "headers": headers, "client": (f"203.0.{i % 100}.{i % 250}", 40000 + i % 20000), "server": ("10.0.0.1", 443),
        }


def test_a_request_costs_no_more_bytes_than_in_0_1_1(tmp_path):
    log_file = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(varied, log_file, queue_size=REQUESTS)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    async def serve_all():
        for n, scope in enumerate(workload(REQUESTS)):
            await app(scope, receive, send)
            if n % 5000 == 0:
                await asyncio.sleep(0.01)  # let the writer drain, as an idle moment in a server would

    asyncio.run(serve_all())
    assert app.close(60)
    db = sqlite_utils.Database(log_file)
    try:
        assert db["request_log"].count == REQUESTS
        # Numbers are stored as integers (times are bound as floats and truncated by the INSERT).
        kinds = db.execute(
            "select distinct typeof(start_ms), typeof(duration_us), typeof(ttfb_us), typeof(http_status),"
            " typeof(body_size), typeof(path_id) from request_log").fetchall()
        assert kinds == [("integer",) * 6]
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.vacuum()  # as a file that has settled: no half-filled pages from batch boundaries
        pages, page_size = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
    finally:
        db.close()
    per_request = pages * page_size / REQUESTS
    print(f"\n{per_request:.1f} bytes per request for {REQUESTS:,} requests (0.1.1: {BYTES_PER_REQUEST_0_1_1})")
    assert per_request <= BYTES_PER_REQUEST_0_1_1


def test_interpreter_exit_flushes_what_is_queued(tmp_path):
    log_file = tmp_path / "log.db"
    script = textwrap.dedent(f"""
        import asyncio
        from asgi_log_to_sqlite import AsgiLogToSqlite
        from test_logger_storage import varied, workload

        app = AsgiLogToSqlite(varied, {str(log_file)!r})

        async def receive():
            return {{"type": "http.request", "body": b"", "more_body": False}}

        async def send(message):
            pass

        async def main():
            for scope in workload(3000):
                await app(scope, receive, send)

        asyncio.run(main())
        # No close(), no flush(): the interpreter exits with rows still queued.
    """)
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    db = sqlite_utils.Database(log_file)
    try:
        assert db["request_log"].count == 3000
    finally:
        db.close()

