"""Bad input as properties: whatever the scope, the headers and the app do, the logger never raises
anything of its own, never changes what reaches the server, and logs each request exactly once.

Examples per run: HYPOTHESIS_PROFILE=ci (default, 300) or slow (10,000), set in conftest.py.
"""
import asyncio
import sqlite3

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_log_to_sqlite import AsgiLogToSqlite
from asgi_log_to_sqlite.record import FLAG_REPLACED, FLAG_TRUNCATED
from conftest import checked, rows

MAX_VALUE = 200
# A failing example may hold a 1 MB header: Hypothesis warns that its repr is large; still show it.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


class AppFailed(Exception):
    """Raised by the generated app; must reach the server unchanged."""


# Bytes that break naive loggers: high bytes, NUL, CR/LF, ANSI escapes, bidi controls.
NASTY = [b"\x80", b"\xff", b"\xc3", b"\x00", b"\r\n", b"\x1b[31m", "\u202e".encode(), "\u2066".encode(), b"\xed\xa0\x80"]
header_bytes = st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(NASTY)), max_size=6).map(b"".join)
huge = st.sampled_from([b"A" * 16 * 1024, b"\xfe" * 16 * 1024, b"x" * (1 << 20)])
header_names = st.one_of(
    st.sampled_from([b"user-agent", b"referer", b"accept-language", b"host", b"forwarded", b"x-forwarded-for",
                     b"cookie", b"authorization", b"content-type"]),
    st.binary(min_size=1, max_size=20),
).filter(lambda name: name != b"x-request-id")
headers = st.lists(st.tuples(header_names, st.one_of(header_bytes, huge)), max_size=8)
paths = st.one_of(st.text(max_size=60), st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
                  st.sampled_from(["/\udcff\udc80", "/a\x00b", "/\u202eevil", "/" + "p" * 5000]))
clients = st.one_of(st.none(), st.tuples(st.sampled_from(["127.0.0.1", "::1", "10.1.2.3", "not-an-ip", ""]),
                                         st.integers(0, 65535)))
methods = st.sampled_from(["GET", "HEAD", "HEAD", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND", "BREW", ""])
statuses = st.sampled_from([100, 200, 204, 206, 301, 304, 400, 404, 418, 500, 503, 599])
bodies = st.lists(st.binary(max_size=300), max_size=4)
behaviours = st.sampled_from(["respond", "raise_before", "raise_after_start", "raise_mid_body",
                              "no_response", "disconnect", "stream_unfinished"])
cases = st.fixed_dictionaries({
    "method": methods, "path": paths, "query": header_bytes, "headers": headers, "client": clients,
    "status": statuses, "response_headers": headers, "body": bodies, "behaviour": behaviours,
})


def generated_app(case):
    """An app that does what the case says, recording every message it hands to ``send``."""
    sent_by_app = []

    async def app(scope, receive, send):
        async def out(message):
            sent_by_app.append(message)
            await send(message)

        behaviour = case["behaviour"]
        if behaviour == "raise_before":
            raise AppFailed("before the response")
        if behaviour == "no_response":
            return
        if behaviour == "disconnect":
            await receive()
            message = await receive()
            assert message["type"] == "http.disconnect"
            return
        await out({"type": "http.response.start", "status": case["status"], "headers": case["response_headers"]})
        if behaviour == "raise_after_start":
            raise AppFailed("after the response started")
        chunks = case["body"]
        for i, chunk in enumerate(chunks):
            if behaviour == "raise_mid_body" and i == len(chunks) // 2:
                raise AppFailed("in the middle of the body")
            await out({"type": "http.response.body", "body": chunk, "more_body": True})
        if behaviour == "raise_mid_body":
            raise AppFailed("at the end of the body")
        if behaviour != "stream_unfinished":
            await out({"type": "http.response.body", "body": b"", "more_body": False})

    return app, sent_by_app


def test_bad_input_never_breaks_the_response_and_logs_each_request_once(tmp_path):
    log_file = str(tmp_path / "log.db")
    expectations = {}

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)
    @given(case=cases)
    def one_request(case):
        number = len(expectations)
        app, sent_by_app = generated_app(case)
        logged = AsgiLogToSqlite(app, log_file, request_id=True, max_value_length=MAX_VALUE,
                                 request_headers=["content-type"], response_headers=["content-type"],
                                 client_ip="full", queue_size=1_000_000)
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": case["method"],
            "scheme": "http", "path": case["path"], "raw_path": None, "query_string": case["query"],
            "root_path": "", "headers": case["headers"] + [(b"x-request-id", f"case-{number}".encode())],
            "client": case["client"], "server": ("127.0.0.1", 8000),
        }
        incoming = [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}]
        received_by_server = []

        async def receive():
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message):
            received_by_server.append(message)

        raised = None
        try:
            asyncio.run(logged(scope, receive, send))
        except AppFailed as error:
            raised = error
        # Only the app's own exceptions come out, and only when the app raised.
        assert (raised is not None) == case["behaviour"].startswith("raise"), raised
        # What reached the server is exactly what the app sent: the same message objects, in order.
        assert len(received_by_server) == len(sent_by_app)
        assert all(a is b for a, b in zip(received_by_server, sent_by_app))
        expectations[f"case-{number}"] = case

    one_request()
    writer_app = AsgiLogToSqlite(generated_app({})[0], log_file)  # constructed again: shares the writer
    assert writer_app.flush(120)
    stats = writer_app.stats()
    assert stats["counted"] == {}, stats  # nothing dropped, nothing failed

    checked(sqlite3.connect(log_file)).close()
    logged_rows = {r["request_id"]: r for r in rows(log_file)}
    # Exactly one row per request.
    assert sorted(logged_rows) == sorted(expectations)
    for request_id, case in expectations.items():
        row = logged_rows[request_id]
        _assert_round_trip(case["path"], row["path"], row["flags"])
        agent = next((v for n, v in case["headers"] if n == b"user-agent"), None)
        if agent is None:
            assert row["user_agent"] is None
        else:
            try:
                text = agent.decode("utf-8")
            except UnicodeDecodeError:
                assert row["flags"] & FLAG_REPLACED, (agent[:40], row["user_agent"][:40])
            else:
                _assert_round_trip(text, row["user_agent"], row["flags"])
        behaviour = case["behaviour"]
        if behaviour == "raise_before":
            assert row["http_status"] == 500
        elif behaviour == "disconnect":
            assert row["http_status"] == 499
        elif behaviour == "no_response":
            assert row["http_status"] is None
        else:
            assert row["http_status"] == case["status"]
        assert row["body_size"] == _body_bytes_sent(case)
        for secret in (b"cookie", b"authorization"):
            assert f"request.{secret.decode()}" not in (row["extra"] or "")


def _body_bytes_sent(case) -> int:
    """Body bytes the generated app handed to the server; HEAD counts 0, as servers send none."""
    behaviour, chunks = case["behaviour"], case["body"]
    if case["method"] == "HEAD" or behaviour in ("raise_before", "no_response", "disconnect", "raise_after_start"):
        return 0
    if behaviour == "raise_mid_body":
        chunks = chunks[: len(chunks) // 2]
    return sum(map(len, chunks))


def _assert_round_trip(sent: str, stored, flags: int) -> None:
    """Stored text equals what was sent (cut at MAX_VALUE), or the row says it was replaced."""
    if sent is None or sent == "":
        return
    try:
        sent.encode("utf-8")
    except UnicodeEncodeError:
        assert flags & FLAG_REPLACED, (sent[:40], stored)
        return
    if len(sent) > MAX_VALUE:
        assert flags & FLAG_TRUNCATED and stored == sent[:MAX_VALUE]
    else:
        assert stored == sent


def test_a_repeated_combination_is_shaped_as_the_first_time(tmp_path):
    """The writer's shortcut for a combination of values it has seen (Shaper.rows_into) must give
    the row the full path (Shaper.row) gave the first time: same columns, same order, same ids."""
    from asgi_log_to_sqlite.record import FLAG_DISCONNECTED, FLAG_EXCEPTION, Shaper
    from asgi_log_to_sqlite.writer import Writer

    writer = Writer(str(tmp_path / "log.db"))
    conn = writer._connection()
    conn.execute("BEGIN IMMEDIATE")
    failures = []

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)
    @given(case=cases, flags=st.sampled_from([0, 0, 0, FLAG_EXCEPTION, FLAG_DISCONNECTED]),
           sizes=st.tuples(st.integers(0, 1 << 40), st.integers(0, 1 << 40)),
           times=st.tuples(st.floats(0, 1e6), st.floats(0, 10), st.one_of(st.none(), st.floats(0, 10))))
    def shaped_twice(case, flags, sizes, times):
        t0, duration, ttfb = times
        scope = {"type": "http", "method": case["method"], "path": case["path"], "query_string": case["query"],
                 "headers": case["headers"], "client": case["client"]}
        status = None if case["behaviour"] in ("raise_before", "no_response") else case["status"]
        record = (shaper := Shaper(), scope, t0, t0 + duration, None if ttfb is None else t0 + ttfb, status,
                  case["response_headers"] if status is not None else None, sizes[0], sizes[1], flags)
        shaped = []
        for _ in range(2):
            plain, full = [], []
            shaper.rows_into([record], 1.7e9, writer.lookups.id_of, plain, full, failures.append)
            shaped.append((plain, full))
        assert shaped[0] == shaped[1]
        assert len(shaped[0][0]) + len(shaped[0][1]) > 0

    try:
        shaped_twice()
    finally:
        conn.execute("ROLLBACK")
        conn.close()  # no writer thread was started, so closing the writer would not close it
    assert failures == []


def test_the_writers_inline_key_is_the_combination_of_values(tmp_path):
    """Shaper.rows_into builds a record's cache key inline, a call per row being a tenth of its
    loop: the key it stores must be record._combination's, the plain reference, or records first
    shaped the slow way (HEAD, an exception) would never be found again by the fast one."""
    from asgi_log_to_sqlite.record import Shaper, _combination, _content_type
    from asgi_log_to_sqlite.writer import Writer

    writer = Writer(str(tmp_path / "log.db"))
    conn = writer._connection()
    conn.execute("BEGIN IMMEDIATE")
    failures = []

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)
    @given(case=cases, route=st.sampled_from([None, "/items/{id}", 7]))
    def keyed(case, route):
        scope = {"type": "http", "method": case["method"], "path": case["path"], "query_string": case["query"],
                 "headers": case["headers"], "client": case["client"]}
        if route is not None:
            scope["route"] = type("Route", (), {"path": route})()
        shaper = Shaper()
        record = (shaper, scope, 1.0, 1.5, None, 200, case["response_headers"], 0, 0, 0)
        shaper.rows_into([record], 1.7e9, writer.lookups.id_of, [], [], failures.append)
        client = case["client"]
        try:
            expected = _combination(scope, case["method"], _content_type(case["response_headers"]),
                                    client[0] if client else None)
            hash(expected)
        except TypeError:
            return  # unhashable: both ways normalise the record first
        if case["method"] == "HEAD":
            expected = _combination(scope, "HEAD", _content_type(case["response_headers"]),
                                    client[0] if client else None)
        assert list(shaper._combined) == ([] if expected is None else [expected])

    try:
        keyed()
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert failures == []
