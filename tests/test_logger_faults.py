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
from conftest import checked, count_prefix, ok, scope_for, serve

MB = 1024 * 1024


def fill_budget(app, before_each=None):
    """Send requests for long unique paths until the writer holds a batch it cannot write: with a
    budget of TIGHT_BUDGET_MB, even with every older row and rollup pruned, a batch of ten such
    paths does not fit. Returns requests sent."""
    sent = 0
    for wave in range(100):
        if before_each is not None:
            before_each()
        scopes = [scope_for(f"/{wave}-{n}-{'x' * 900}") for n in range(10)]
        assert asyncio.run(serve(app, scopes)) == [200] * 10  # the app answered every request normally
        sent += 10
        if not app.flush(2):  # full: the held batch cannot be written yet
            break
    assert 0 < app.stats()["held"] and sent < 1000
    return sent


# Past max_size_mb the oldest rows, then the oldest rollups, are pruned first (tests/test_retention.py);
# these tests need a budget that pruning cannot free, so that a batch stays held: a new log's own
# pages (38 of 4 KB) and two pages more.
TIGHT_BUDGET_MB = 0.16


def test_a_bad_record_in_a_held_batch_is_counted_once_however_often_it_is_retried(tmp_path):
    log_file = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(ok, log_file, max_size_mb=TIGHT_BUDGET_MB, queue_size=3000, stop_timeout_ms=200)
    bad_record = (app.shaper, None, 0.0, 0.0, None, 200, None, 0, 0, 0)  # no row can be shaped from it
    # A batch that fits, with a bad record: counted once it is written.
    app.writer.submit(bad_record)
    assert asyncio.run(serve(app, [scope_for("/short")])) == [200]
    assert app.flush(5)
    bad = app.stats()["counted"].get("record_error", 0)
    assert bad == 1, app.stats()
    # Then waves each led by a bad record, until one is held: the held batch holds one too.
    fill_budget(app, before_each=lambda: app.writer.submit(bad_record))
    assert app.stats()["counted"].get("record_error", 0) == bad
    time.sleep(3)  # several attempts at the held batch, each shaping its bad record again
    assert app.stats()["counted"].get("record_error") == bad, app.stats()
    assert app.close()  # the held batch is counted as disk_full once stop_timeout_ms is over
    counted = app.stats()["counted"]
    assert counted.get("record_error") == bad and counted.get("disk_full", 0) > 0, counted


def test_budget_options_are_checked():
    with pytest.raises(ValueError, match=r"max_size_mb=0: expected a positive number of megabytes"):
        AsgiLogToSqlite(ok, "log.db", max_size_mb=0)
    with pytest.raises(ValueError, match=r"max_distinct_values=0.5: expected a whole number of at least 1"):
        AsgiLogToSqlite(ok, "log.db", max_distinct_values=0.5)


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


async def serve_while(app, prefix, seconds, pause=0.004):
    """Send numbered requests for ``seconds``, pausing between them as a real arrival rate would."""
    statuses, n = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        statuses += await serve(app, [scope_for(f"{prefix}/{n}")])
        n += 1
        await asyncio.sleep(pause)
    return statuses


def test_write_lock_held_past_busy_timeout_with_a_small_queue(tmp_path, capfd):
    """A held lock stalls the writer: it holds its batch and retries it; the queue stays bounded,
    the app keeps answering, and every request is a row or a counted queue_full, exactly."""
    log_file = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(ok, log_file, busy_timeout_ms=300, queue_size=50)
    asyncio.run(serve(app, [scope_for("/warm-up/0")]))
    assert app.flush(10)

    holder = sqlite3.connect(log_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        during = asyncio.run(serve_while(app, "/during", seconds=2.0))
        stats = app.stats()
        assert stats["queued"] + stats["held"] <= 50
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert app.flush(30)
    counted = app.stats()["counted"]
    assert set(counted) == {"queue_full"}, counted  # the held batch itself is never dropped
    after = asyncio.run(serve_while(app, "/after", seconds=0.5))
    assert app.flush(30)
    assert set(during) == {200} and set(after) == {200}
    assert app.stats()["counted"] == counted  # nothing more lost once the lock was gone

    conn = checked(sqlite3.connect(log_file))
    try:
        logged_during = count_prefix(conn, "/during")
        assert logged_during + counted["queue_full"] == len(during)
        assert logged_during >= 50  # what the queue held through the lock was written
        assert count_prefix(conn, "/after") == len(after)  # writing resumed by itself
        stored = dict(conn.execute("select reason, count from log_counters"))
        assert stored == {"queue_full": counted["queue_full"]}
    finally:
        conn.close()
    err = capfd.readouterr().err
    assert "cannot write (locked" in err and "writing resumed after locked" in err


def test_a_long_read_transaction_never_stalls_logging(tmp_path):
    """A reader holding a snapshot (Datasette browsing the log) blocks neither the app nor the writer."""
    log_file = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(ok, log_file)
    asyncio.run(serve(app, [scope_for("/warm-up/0")]))
    assert app.flush(10)

    reader = sqlite3.connect(log_file, isolation_level=None)
    reader.execute("BEGIN")
    before = reader.execute("select count(*) from request_log").fetchone()[0]
    wal_sizes = []
    try:
        statuses = []
        for _ in range(4):
            statuses += asyncio.run(serve_while(app, "/reading", seconds=0.5, pause=0.001))
            assert app.flush(10)
            wal_sizes.append(os.path.getsize(log_file + "-wal"))
        # The reader still sees its snapshot; the rows are there for everyone else.
        assert reader.execute("select count(*) from request_log").fetchone()[0] == before
    finally:
        reader.execute("COMMIT")
        reader.close()
    assert set(statuses) == {200}
    assert app.stats()["counted"] == {}
    conn = checked(sqlite3.connect(log_file))
    try:
        assert count_prefix(conn, "/reading") == len(statuses)
    finally:
        conn.close()
    print(f"\n{len(statuses)} requests logged under a 2 s read transaction; -wal peaked at {max(wal_sizes) / 1024:.0f} KiB")


def test_cardinality_flood_is_bucketed_past_max_distinct_values(tmp_path, capfd):
    log_file = str(tmp_path / "log.db")
    limit, sent = 1000, 3000
    app = AsgiLogToSqlite(ok, log_file, max_distinct_values=limit, queue_size=sent)
    scopes = [scope_for(f"/unique/{n}", agent=f"bot/{n}".encode(), referer=f"https://r.example/{n}".encode())
              for n in range(sent)]
    for scope, n in zip(scopes, range(sent)):
        scope["query_string"] = f"q={n}".encode()
    assert asyncio.run(serve(app, scopes)) == [200] * sent
    assert app.flush(60)
    conn = checked(sqlite3.connect(log_file))
    try:
        assert conn.execute("select count(*) from request_log").fetchone()[0] == sent  # every request still a row
        for table in ("paths", "query_strings", "user_agents", "referers"):
            values = conn.execute(f"select count(*), sum(name = '(other)') from {table}").fetchone()
            assert values == (limit + 1, 1), table  # the limit, plus the one bucket
        bucketed = conn.execute("select count(*) from request_log where flags & 128").fetchone()[0]
        assert bucketed == sent - limit
        stored = dict(conn.execute("select reason, count from log_counters"))
        assert stored["bucketed"] == app.stats()["counted"]["bucketed"] == 4 * (sent - limit)
    finally:
        conn.close()
    assert "reached max_distinct_values=1000" in capfd.readouterr().err
