"""asgi_log_to_sqlite in-process: real SQLite files, a real Starlette app, real ASGI message flows."""
import asyncio
import os
import pathlib
import shutil
import sqlite3
import threading
import time

import httpx
import pytest
import sqlite_utils
from asgiref.testing import ApplicationCommunicator
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute

from asgi_log_to_sqlite import SCHEMA_VERSION, AsgiLogToSqlite
from asgi_log_to_sqlite.record import (
    FLAG_DISCONNECTED, FLAG_EXCEPTION, FLAG_EXCLUDED_FAILURE, FLAG_REPLACED, FLAG_TRUNCATED, FLAG_WEBSOCKET,
)
from conftest import TESTS, rows
from datasette_configure_asgi import ConfigError, wrap
from datasette_configure_asgi.testing import check_middleware

ORIGINAL_COLUMNS = [
    "start", "method", "path", "query_string", "user_agent", "referer", "accept_language",
    "http_status", "content_type", "client_ip", "duration", "body_size",
]
LEGACY_LOOKUPS = ["accept_languages", "content_types", "paths", "query_strings", "referers", "user_agents"]


class Boom(Exception):
    pass


async def hello(request):
    return PlainTextResponse("hello " + request.path_params.get("name", "world"))


async def boom(request):
    raise Boom("the app failed")


async def stream(request):
    async def chunks():
        for i in range(3):
            await asyncio.sleep(0.05)
            yield b"x" * 1000

    return StreamingResponse(chunks(), media_type="text/plain")


async def echo(websocket):
    await websocket.accept()
    for _ in range(2):
        text = await websocket.receive_text()
        await websocket.send_text("echo:" + text)
    await websocket.close(code=4001)


APP = Starlette(routes=[
    Route("/", hello), Route("/hello/{name}", hello), Route("/boom", boom), Route("/stream", stream),
    WebSocketRoute("/ws", echo),
])


async def get(app, *paths, **kwargs):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        return [await client.get(p, **kwargs) for p in paths]


@pytest.fixture
def log_file(tmp_path):
    return str(tmp_path / "log.db")


def logged(log_file, **options):
    return AsgiLogToSqlite(APP, log_file, **options)


@pytest.mark.asyncio
async def test_requests_are_logged_with_original_and_new_columns(log_file):
    app = AsgiLogToSqlite(APP, log_file)  # the 0.1.1 call: positional file, no options
    responses = await get(app, "/hello/ada?x=1", "/",
                          headers={"user-agent": "pytest", "referer": "https://r.example/", "accept-language": "fr"})
    assert app.flush()
    conn = sqlite3.connect(log_file)
    db = sqlite_utils.Database(conn)
    assert [c.name for c in db["requests"].columns] == ORIGINAL_COLUMNS
    first = conn.execute("select * from requests order by start limit 1").fetchone()
    start, method, path_id, qs_id, ua_id, ref_id, al_id, status, ct_id, ip, duration, body_size = first
    assert method == "GET" and status == 200 and body_size == len(responses[0].content)
    assert conn.execute("select name from paths where id = ?", (path_id,)).fetchone() == ("/hello/ada",)
    assert conn.execute("select name from query_strings where id = ?", (qs_id,)).fetchone() == ("?x=1",)
    assert conn.execute("select name from user_agents where id = ?", (ua_id,)).fetchone() == ("pytest",)
    assert conn.execute("select name from content_types where id = ?", (ct_id,)).fetchone() == ("text/plain; charset=utf-8",)
    assert 0 < duration < 5 and abs(start - time.time()) < 60
    for table in LEGACY_LOOKUPS:
        # user_agents also carries the agent's classes (agents.py); the 0.1.1 columns come first.
        assert [c.name for c in db[table].columns][:2] == ["id", "name"]
    readable = rows(log_file)
    assert readable[0]["route"] == "/hello/{name}"
    assert readable[0]["client_ip"] == "127.0.0.0"  # httpx's client 127.0.0.1, truncated to /24
    assert readable[0]["ttfb_ms"] <= readable[0]["duration_ms"]
    assert conn.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


@pytest.mark.asyncio
async def test_a_0_1_1_database_is_upgraded_in_place_with_nothing_lost(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(TESTS / "fixtures" / "log-0.1.1.db", path)
    before = sqlite3.connect(path).execute("select * from requests order by rowid").fetchall()
    assert len(before) == 21
    app = AsgiLogToSqlite(APP, str(path))
    await get(app, "/hello/new")
    assert app.flush()
    conn = sqlite3.connect(path)
    assert conn.execute("select * from requests_0_1 order by rowid").fetchall() == before
    assert sqlite_utils.Database(conn)["requests"].count == 22
    old_rows = conn.execute("select * from requests where start < (select max(start) from requests) order by start").fetchall()
    assert [tuple(r) for r in old_rows] == [tuple(r) for r in sorted(before, key=lambda r: r[0])]
    # Old lookup ids keep their meaning; new rows reuse the same tables.
    assert sqlite_utils.Database(conn)["paths"].count == 6
    assert conn.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert conn.execute("pragma foreign_key_check").fetchall() == []
    assert conn.execute("pragma user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


@pytest.mark.asyncio
async def test_through_the_loader_entry(log_file):
    app = wrap(APP, [{"class": "asgi_log_to_sqlite.AsgiLogToSqlite", "args": {"file": log_file, "client_ip": "full"}}])
    await get(app, "/")
    assert app.flush()
    assert rows(log_file)[0]["client_ip"] == "127.0.0.1"


def test_unwritable_directory_is_a_startup_error_naming_the_file(tmp_path):
    missing = str(tmp_path / "no-such-dir" / "log.db")
    with pytest.raises(ConfigError) as error:
        wrap(APP, [{"class": "asgi_log_to_sqlite.AsgiLogToSqlite", "args": {"file": missing}}])
    assert f"cannot log to '{missing}': directory" in error.value.format()
    assert "does not exist; create it first" in error.value.format()


def test_bad_options_name_the_option(log_file):
    with pytest.raises(ValueError, match=r"sample_rate=2: expected a number in \(0, 1\]"):
        AsgiLogToSqlite(APP, log_file, sample_rate=2)
    with pytest.raises(ValueError, match="'Authorization' is never stored"):
        AsgiLogToSqlite(APP, log_file, request_headers=["Authorization"])
    with pytest.raises(ValueError, match='client_ip=\'partial\': expected one of "truncate", "full", "none"'):
        AsgiLogToSqlite(APP, log_file, client_ip="partial")


def test_follows_the_middleware_protocol(log_file):
    check_middleware(AsgiLogToSqlite, file=log_file)


@pytest.mark.asyncio
async def test_exception_before_response_is_500_and_reraised(log_file):
    app = logged(log_file)
    with pytest.raises(Boom):
        await get(app, "/boom")
    app.flush()
    row = rows(log_file)[0]
    assert row["http_status"] == 500
    assert row["flags"] & FLAG_EXCEPTION


@pytest.mark.asyncio
async def test_streaming_duration_and_ttfb(log_file):
    app = logged(log_file)
    (response,) = await get(app, "/stream")
    assert response.content == b"x" * 3000
    app.flush()
    row = rows(log_file)[0]
    assert row["body_size"] == 3000
    assert row["duration_ms"] >= 140  # three 50 ms chunks: duration covers the stream
    assert row["ttfb_ms"] < row["duration_ms"]


@pytest.mark.asyncio
async def test_head_is_logged_with_zero_body(log_file):
    app = logged(log_file)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.head("/")
    app.flush()
    row = rows(log_file)[0]
    assert (row["method"], row["http_status"], row["body_size"]) == ("HEAD", 200, 0)


async def raw_http(app, scope_extra=None, messages=None):
    """Drive one HTTP request by hand; return what the server was sent."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "", "headers": [],
             "client": ("10.1.2.3", 5000), "server": ("127.0.0.1", 80)}
    scope.update(scope_extra or {})
    incoming = list(messages or [{"type": "http.request", "body": b"", "more_body": False}])
    sent = []

    async def receive():
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.asyncio
async def test_client_disconnect_is_499_with_bytes_sent_before_it(log_file):
    async def slow_stream(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a" * 5000, "more_body": True})
        message = await receive()  # the client hangs up here
        assert message["type"] == "http.disconnect"

    app = AsgiLogToSqlite(slow_stream, log_file)
    await raw_http(app, messages=[{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}])
    app.flush()
    row = rows(log_file)[0]
    assert row["http_status"] == 499
    assert row["flags"] & FLAG_DISCONNECTED
    assert row["body_size"] == 5000


@pytest.mark.asyncio
async def test_bad_bytes_and_missing_client_never_break_the_response(log_file):
    app = logged(log_file)
    sent = await raw_http(app, {
        "client": None,
        "path": "/files/\udcff",  # a surrogate-escaped byte, as servers give for non-UTF-8 paths
        "headers": [(b"user-agent", b"\xff\xfe bad"), (b"referer", b"\x80"), (b"accept-language", b"en\x00\r\n")],
    })
    assert sent[0]["status"] == 404  # Starlette's own answer, untouched
    app.flush()
    row = rows(log_file)[0]
    assert row["client_ip"] is None
    assert row["user_agent"] == "\\xff\\xfe bad"
    assert row["path"] == "/files/\\xff"
    assert row["accept_language"] == "en\x00\r\n"  # valid UTF-8 round-trips exactly
    assert row["flags"] & FLAG_REPLACED


@pytest.mark.asyncio
async def test_each_combination_of_values_is_stored_as_sent(log_file):
    # The writer caches the ids of whole combinations (method, path, agent, ...); repeated headers
    # take a slower way where the first value wins. Neither may mix one request's values into another's.
    app = logged(log_file)
    sent = [
        ("/a", [(b"user-agent", b"one"), (b"referer", b"https://r.example/1")]),
        ("/a", [(b"user-agent", b"two"), (b"user-agent", b"one")]),
        ("/a", [(b"user-agent", b"one"), (b"referer", b"https://r.example/1")]),
        ("/b", [(b"user-agent", b"one"), (b"referer", b"https://r.example/1")]),
        ("/a", [(b"user-agent", b"two")]),
        ("/a", [(b"referer", b"https://r.example/1"), (b"user-agent", b"two")]),
        ("/a", []),
    ]
    for path, headers in sent:
        await raw_http(app, {"path": path, "headers": headers})
    app.flush()
    stored = [(r["path"], r["user_agent"], r["referer"]) for r in rows(log_file)]
    assert stored == [
        ("/a", "one", "https://r.example/1"),
        ("/a", "two", None),
        ("/a", "one", "https://r.example/1"),
        ("/b", "one", "https://r.example/1"),
        ("/a", "two", None),
        ("/a", "two", "https://r.example/1"),
        ("/a", None, None),
    ]


@pytest.mark.asyncio
async def test_response_is_byte_for_byte_unchanged(log_file):
    plain = await get(APP, "/hello/x", "/stream")
    wrapped = await get(logged(log_file), "/hello/x", "/stream")
    for a, b in zip(plain, wrapped):
        assert (a.status_code, a.headers.raw, a.content) == (b.status_code, b.headers.raw, b.content)


@pytest.mark.asyncio
async def test_websocket_session_is_one_row(log_file):
    app = logged(log_file)
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "path": "/ws", "raw_path": b"/ws", "query_string": b"",
             "headers": [(b"host", b"t")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "subprotocols": [],
             "scheme": "ws", "root_path": ""}
    talk = ApplicationCommunicator(app, scope)
    await talk.send_input({"type": "websocket.connect"})
    assert (await talk.receive_output(1))["type"] == "websocket.accept"
    for text in ("a", "bb"):
        await talk.send_input({"type": "websocket.receive", "text": text})
        assert (await talk.receive_output(1))["text"] == "echo:" + text
    assert (await talk.receive_output(1)) == {"type": "websocket.close", "code": 4001, "reason": ""}
    await talk.wait(1)
    app.flush()
    (row,) = rows(log_file)
    assert row["method"] == "WEBSOCKET"
    assert row["flags"] & FLAG_WEBSOCKET
    assert (row["http_status"], row["ws_close_code"], row["ws_messages_in"], row["ws_messages_out"]) == (101, 4001, 2, 2)


async def failing_websocket(websocket):
    await websocket.accept()
    raise Boom("the websocket handler failed")


WS_APP = Starlette(routes=[WebSocketRoute("/ws", echo), WebSocketRoute("/ws-fails", failing_websocket)])


async def websocket_session(app, path, texts=("a",)):
    """One websocket session as a server runs it; True when the app raised."""
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [(b"host", b"t")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 80), "subprotocols": [], "scheme": "ws", "root_path": ""}
    talk = ApplicationCommunicator(app, scope)
    await talk.send_input({"type": "websocket.connect"})
    assert (await talk.receive_output(1))["type"] == "websocket.accept"
    try:
        for text in texts:
            await talk.send_input({"type": "websocket.receive", "text": text})
            await talk.receive_output(1)
        await talk.send_input({"type": "websocket.disconnect", "code": 1000})
        await talk.wait(1)
    except Boom:
        return True
    return False


@pytest.mark.asyncio
async def test_websocket_sessions_are_sampled_so_their_sample_rate_is_true(log_file):
    app = AsgiLogToSqlite(WS_APP, log_file, sample_rate=0.25)
    sessions = 200
    for _ in range(sessions):
        await websocket_session(app, "/ws", texts=("a", "b"))
    assert app.flush()
    logged_rows = rows(log_file)
    assert 20 < len(logged_rows) < 90  # about a quarter, not all of them
    assert len(logged_rows) + app.stats()["counted"]["sampled_out"] == sessions
    assert {r["sample_rate"] for r in logged_rows} == {0.25}


@pytest.mark.asyncio
async def test_excluded_websocket_failures_are_still_logged(log_file):
    app = AsgiLogToSqlite(WS_APP, log_file, exclude=["/ws*"])
    assert not await websocket_session(app, "/ws", texts=("a", "b"))
    assert await websocket_session(app, "/ws-fails", texts=())
    assert app.flush()
    (row,) = rows(log_file)
    assert row["path"] == "/ws-fails"
    assert row["flags"] & FLAG_WEBSOCKET and row["flags"] & FLAG_EXCLUDED_FAILURE
    assert app.stats()["counted"]["excluded"] == 1


@pytest.mark.asyncio
async def test_lifespan_passes_through_and_shutdown_flushes(log_file):
    app = logged(log_file)
    await get(app, "/", "/hello/a")
    talk = ApplicationCommunicator(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}})
    await talk.send_input({"type": "lifespan.startup"})
    assert await talk.receive_output(1) == {"type": "lifespan.startup.complete"}
    await talk.send_input({"type": "lifespan.shutdown"})
    assert await talk.receive_output(5) == {"type": "lifespan.shutdown.complete"}
    # No flush() by us: shutdown wrote what was queued before it was passed on.
    assert len(rows(log_file)) == 2


@pytest.mark.asyncio
async def test_constructing_many_times_shares_one_writer_and_thread(log_file):
    before = threading.active_count()
    apps = [logged(log_file) for _ in range(5)]
    assert len({id(a.writer) for a in apps}) == 1
    assert threading.active_count() == before  # nothing started yet
    for app in apps:
        await get(app, "/")
    assert threading.active_count() == before + 1
    apps[0].flush()
    assert len(rows(log_file)) == 5


@pytest.mark.asyncio
async def test_file_and_its_wal_are_private(log_file):
    app = logged(log_file)
    await get(app, "/")
    app.flush()
    for suffix in ("", "-wal", "-shm"):
        assert os.stat(log_file + suffix).st_mode & 0o777 == 0o600, suffix


@pytest.mark.asyncio
async def test_seeded_secrets_never_reach_the_file(tmp_path):
    log_file = str(tmp_path / "log.db")

    async def sets_cookie(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"set-cookie", b"sid=SECRET-SETCOOKIE-5"), (b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    app = AsgiLogToSqlite(sets_cookie, log_file, request_headers=["x-trace"], response_headers=["content-type"],
                          redact_params=["customer_ref"])
    secrets = ["SECRET-AUTH-1", "SECRET-COOKIE-2", "SECRET-TOKEN-3", "SECRET-REFTOKEN-4", "SECRET-SETCOOKIE-5",
               "SECRET-PROXY-6", "SECRET-APIKEY-7", "SECRET-CUSTOM-8"]
    await raw_http(app, {
        "path": "/account",
        "query_string": b"page=2&access_token=SECRET-TOKEN-3&apiKey=SECRET-APIKEY-7&customer_ref=SECRET-CUSTOM-8",
        "headers": [(b"authorization", b"Bearer SECRET-AUTH-1"), (b"cookie", b"session=SECRET-COOKIE-2"),
                    (b"proxy-authorization", b"Basic SECRET-PROXY-6"),
                    (b"referer", b"https://site.example/login?code=SECRET-REFTOKEN-4&next=/"), (b"x-trace", b"t-1")],
        "client": ("198.51.100.77", 4000),
    })
    app.flush()
    # The main file and the WAL, where the rows still are before a checkpoint.
    data = b"".join(pathlib.Path(log_file + s).read_bytes() for s in ("", "-wal") if os.path.exists(log_file + s))
    for secret in secrets:
        assert secret.encode() not in data, secret
    assert b"198.51.100.77" not in data
    row = rows(log_file)[0]
    assert row["query_string"] == "?page=2&access_token=REDACTED&apiKey=REDACTED&customer_ref=REDACTED"
    assert row["referer"] == "https://site.example/login?code=REDACTED&next=/"
    assert row["client_ip"] == "198.51.100.0"
    assert row["extra"] == '{"request.x-trace": "t-1", "response.content-type": "text/plain"}'


@pytest.mark.parametrize("mode,expected", [("truncate", "2001:db8:abcd::"), ("full", "2001:db8:abcd:12::7"), ("none", None)])
@pytest.mark.asyncio
async def test_client_ip_policy(tmp_path, mode, expected):
    log_file = str(tmp_path / f"{mode}.db")
    app = AsgiLogToSqlite(APP, log_file, client_ip=mode)
    await raw_http(app, {"client": ("2001:db8:abcd:12::7", 1)})
    app.flush()
    assert rows(log_file)[0]["client_ip"] == expected


@pytest.mark.asyncio
async def test_forwarded_headers_only_from_trusted_proxies(log_file):
    app = logged(log_file, trusted_proxies=["10.0.0.0/8"], client_ip="full")
    xff = [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.5")]
    await raw_http(app, {"client": ("10.1.1.1", 1), "headers": xff})       # via a trusted proxy
    await raw_http(app, {"client": ("192.0.2.50", 1), "headers": xff})     # spoofed, direct
    app.flush()
    first, second = rows(log_file)
    assert (first["client_ip"], first["forwarded_ip"]) == ("10.1.1.1", "203.0.113.9")
    assert (second["client_ip"], second["forwarded_ip"]) == ("192.0.2.50", None)


@pytest.mark.asyncio
async def test_include_exclude_and_failures_still_logged(log_file):
    app = logged(log_file, exclude=["/hello/*", "/boom"])
    await get(app, "/", "/hello/skip")
    with pytest.raises(Boom):
        await get(app, "/boom")
    app.flush()
    logged_rows = rows(log_file)
    assert [r["path"] for r in logged_rows] == ["/", "/boom"]
    assert logged_rows[1]["flags"] & FLAG_EXCLUDED_FAILURE
    assert app.stats()["counted"]["excluded"] == 1


@pytest.mark.asyncio
async def test_sampling_stores_the_rate(log_file):
    app = logged(log_file, sample_rate=0.5)
    await get(app, *["/"] * 200)
    app.flush()
    logged_rows = rows(log_file)
    assert 50 < len(logged_rows) < 150
    assert {r["sample_rate"] for r in logged_rows} == {0.5}
    assert len(logged_rows) + app.stats()["counted"]["sampled_out"] == 200


@pytest.mark.asyncio
async def test_a_sampled_and_an_unsampled_middleware_on_one_file_each_store_their_rate(log_file):
    """Plain rows leave sample_rate to the column's DEFAULT 1.0, a sampled middleware's rows bind
    it: in one batch, side by side, each row keeps its own."""
    every, half = logged(log_file), logged(log_file, sample_rate=0.5)
    for _ in range(50):
        await get(every, "/")
        await get(half, "/")
    assert every.flush() and half.flush()
    rates = [r["sample_rate"] for r in rows(log_file)]
    assert rates.count(1.0) == 50 and 10 < rates.count(0.5) < 40 and len(rates) == 50 + rates.count(0.5)


@pytest.mark.asyncio
async def test_truncation_request_id_and_extra_headers(log_file):
    app = logged(log_file, max_value_length=50, request_id=True)
    await get(app, "/hello/" + "n" * 200, headers={"x-request-id": "req-abc"})
    await get(app, "/")
    app.flush()
    long_row, short_row = rows(log_file)
    assert len(long_row["path"]) == 50 and long_row["flags"] & FLAG_TRUNCATED
    assert long_row["request_id"] == "req-abc"
    assert len(short_row["request_id"]) == 32  # generated on the writer thread


@pytest.mark.asyncio
async def test_full_queue_is_counted_not_blocking(log_file, capfd):
    app = logged(log_file, queue_size=2)
    # The writer lingers 50 ms before it drains, so a burst overfills a queue of two.
    await get(app, *["/"] * 30)
    app.flush()
    counted = app.stats()["counted"]
    assert counted["queue_full"] > 0
    assert len(rows(log_file)) + counted["queue_full"] == 30
    stored = dict(sqlite3.connect(log_file).execute("select reason, count from log_counters"))
    assert stored["queue_full"] == counted["queue_full"]
    assert "row(s) not written: queue_full" in capfd.readouterr().err


@pytest.mark.asyncio
async def test_a_lock_past_busy_timeout_loses_nothing_and_writing_resumes(log_file, capfd):
    app = logged(log_file, busy_timeout_ms=100)
    await get(app, "/")
    app.flush()
    holder = sqlite3.connect(log_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        responses = await get(app, "/hello/during-lock", "/hello/during-lock-2")
        assert [r.status_code for r in responses] == [200, 200]
        assert not app.flush(timeout=1.0)  # held: the lock outlasts busy_timeout_ms many times over
        assert app.stats()["held"] == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await get(app, "/hello/after")
    assert app.flush(timeout=10)
    paths = [r["path"] for r in rows(log_file)]
    assert paths == ["/", "/hello/during-lock", "/hello/during-lock-2", "/hello/after"]  # all, in order
    assert app.stats()["counted"] == {}
    assert list(sqlite3.connect(log_file).execute("select reason, count from log_counters")) == []
    err = capfd.readouterr().err
    assert "cannot write (locked" in err and "holding 2 record(s) and retrying" in err
    assert "writing resumed after locked" in err


def test_a_graceful_stop_waits_stop_timeout_for_a_lock_then_counts(log_file, capfd):
    app = logged(log_file, busy_timeout_ms=100, stop_timeout_ms=700)
    asyncio.run(get(app, "/"))
    assert app.flush()
    holder = sqlite3.connect(log_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        asyncio.run(get(app, *[f"/during/{n}" for n in range(5)]))
        started = time.monotonic()
        assert app.close(timeout=10)
        waited = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert 0.6 < waited < 5, waited  # stop_timeout_ms, not busy_timeout_ms times each retry
    assert app.stats()["counted"] == {"locked": 5}
    assert "5 row(s) not written: locked" in capfd.readouterr().err
    assert [r["path"] for r in rows(log_file)] == ["/"]


def test_close_that_times_out_leaves_one_writer_thread(log_file):
    """A close() that returns before the thread ends must not let the next request start a second one."""
    app = logged(log_file, busy_timeout_ms=100)
    asyncio.run(get(app, "/"))
    assert app.flush()
    holder = sqlite3.connect(log_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        asyncio.run(get(app, "/during"))
        assert not app.close(timeout=0.2)  # still retrying the held batch
        asyncio.run(get(app, "/after-close"))
        writers = [t for t in threading.enumerate() if t.name == f"asgi-log-to-sqlite {log_file}"]
        assert len(writers) == 1, writers
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert app.close(timeout=10)
    assert [r["path"] for r in rows(log_file)] == ["/", "/during", "/after-close"]
    assert app.stats()["counted"] == {}
