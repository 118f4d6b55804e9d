"""The logger when things go wrong: a full database, several processes meeting the same new value.

Every scenario sends numbered requests and checks that rows written plus drops counted equal the
requests sent, then runs SQLite's integrity and foreign key checks.
"""
import asyncio
import multiprocessing
import os
import sqlite3
import time

import pytest

from asgi_log_to_sqlite import AsgiLogToSqlite

MB = 1024 * 1024


async def ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def scope_for(path, agent=b"tests", referer=None):
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


def checked(conn):
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    return conn


def test_full_database_counts_drops_and_resumes_once_space_is_freed(tmp_path, capfd):
    log_file = str(tmp_path / "log.db")
    budget_mb = 0.25
    app = AsgiLogToSqlite(ok, log_file, max_size_mb=budget_mb, batch_size=2000)

    sent = 8000
    statuses = asyncio.run(serve(app, (scope_for(f"/n/{n}") for n in range(sent))))
    assert statuses == [200] * sent  # the app answered every request normally
    assert app.flush(120)
    counted = app.stats()["counted"]
    assert counted.get("disk_full", 0) > 0, counted
    conn = checked(sqlite3.connect(log_file, isolation_level=None))
    try:
        written = conn.execute("select count(*) from request_log").fetchone()[0]
        assert written + counted["disk_full"] == sent
        pages, page_size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        assert pages * page_size <= budget_mb * MB
        assert "not written: disk_full" in capfd.readouterr().err

        # Free space the way a retention job would, then log again: no restart needed.
        conn.execute("delete from request_log where id <= (select max(id) / 2 from request_log)")
        freed_at = time.monotonic()
        after = 300
        statuses = asyncio.run(serve(app, (scope_for(f"/after/{n}") for n in range(after))))
        assert statuses == [200] * after
        assert app.flush(60)
        resumed_after = time.monotonic() - freed_at
        new_rows = conn.execute("select count(*) from request_log r join paths p on p.id = r.path_id "
                                "where p.name like '/after/%'").fetchone()[0]
        assert new_rows == after, (new_rows, app.stats())
        print(f"\nfull at {pages * page_size / MB:.2f} MB; {counted['disk_full']} of {sent} counted as disk_full; "
              f"logging resumed {resumed_after:.2f} s after space was freed")
        # The counts reach the file once it has room again.
        stored = dict(conn.execute("select reason, count from log_counters"))
        assert stored.get("disk_full") == counted["disk_full"]
        checked(conn)
    finally:
        conn.close()


def test_max_size_mb_is_checked():
    with pytest.raises(ValueError, match=r"max_size_mb=0: expected a positive number of megabytes"):
        AsgiLogToSqlite(ok, "log.db", max_size_mb=0)


def _first_sighting(log_file, barrier, requests):
    """One process: wait for the others, then log the same never-seen values at the same instant."""
    app = AsgiLogToSqlite(ok, log_file)
    scopes = [scope_for("/brand-new", agent=b"FreshAgent/1.0", referer=b"https://new.example/")] * requests
    barrier.wait()
    asyncio.run(serve(app, scopes))
    assert app.close(30)
    os._exit(0 if not app.stats()["counted"] else 3)


@pytest.mark.parametrize("round_", range(3))
def test_processes_meeting_the_same_new_value_make_one_lookup_row(tmp_path, round_):
    log_file = str(tmp_path / "log.db")
    processes, requests = 4, 50
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    workers = [context.Process(target=_first_sighting, args=(log_file, barrier, requests)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0] * processes
    conn = checked(sqlite3.connect(log_file))
    try:
        for table, value in (("paths", "/brand-new"), ("user_agents", "FreshAgent/1.0"), ("referers", "https://new.example/")):
            assert conn.execute(f"select count(*) from {table} where name = ?", (value,)).fetchone()[0] == 1, table
        assert conn.execute("select count(*) from request_log").fetchone()[0] == processes * requests
        orphans = conn.execute(
            "select count(*) from request_log where path_id is null or user_agent_id is null or referer_id is null "
            "or path_id not in (select id from paths) or user_agent_id not in (select id from user_agents)"
        ).fetchone()[0]
        assert orphans == 0
    finally:
        conn.close()
