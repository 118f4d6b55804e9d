"""The record the event loop hands over, the row it becomes, and the writer giving the GIL back while it shapes."""
import sqlite3
import sys
import threading
import time

from asgi_log_to_sqlite import AsgiLogToSqlite, schema
from asgi_log_to_sqlite.record import FLAG_WEBSOCKET, Record, Shaper
from asgi_log_to_sqlite.writer import Writer
from conftest import ok, scope_for, serve


def http_record(shaper, i=0):
    t0 = time.perf_counter()
    return tuple.__new__(Record, (shaper, scope_for(f"/page/{i}"), t0, t0 + 0.002, t0 + 0.001, 200,
                                  [(b"content-type", b"text/plain")], 13, 4, 0, None, None, None))


def test_the_middleware_queues_records_with_named_fields(tmp_path):
    import asyncio

    app = AsgiLogToSqlite(ok, str(tmp_path / "log.db"))
    queued = []
    app.submit = queued.append  # what the loop hands to the writer, caught before the queue
    asyncio.run(serve(app, [scope_for("/named")]))
    (record,) = queued
    assert type(record) is Record
    assert record.scope["path"] == "/named" and record.status == 200 and record.flags == 0
    assert record.ws_in is None and not record.flags & FLAG_WEBSOCKET


def test_a_row_has_the_schema_s_columns_in_order(tmp_path):
    writer = Writer(str(tmp_path / "log.db"))
    conn = writer._connection()
    conn.execute("BEGIN IMMEDIATE")
    try:
        shaper = Shaper()
        record = http_record(shaper)
        row = shaper.row(record, 0.0, writer.lookups.id_of)
        assert len(row) == len(schema.COMMON_COLUMNS)
        named = dict(zip(schema.COMMON_COLUMNS, row))
        assert named["http_status"] == 200 and named["body_size"] == 13 and named["request_size"] == 4
        assert named["ttfb_us"] < named["duration_us"]
        path = conn.execute("select name from paths where id = ?", (named["path_id"],)).fetchone()
        assert path == ("/page/0",)
        # A plain tuple of the same fields (as tools build them) gives the same row.
        assert shaper.row(tuple(record)[:10], 0.0, writer.lookups.id_of) == row
        with_options = Shaper(request_id=True)
        assert len(with_options.row(record._replace(shaper=with_options), 0.0, writer.lookups.id_of)) == len(schema.COLUMNS)
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_the_writer_lets_a_waiting_thread_run_while_it_shapes_a_large_batch(tmp_path):
    """With Python's forced switch put off to 1 s, only the writer's own hand-overs (and SQLite's
    calls) let another thread run: the ticker must not wait for the whole batch's shaping."""
    writer = Writer(str(tmp_path / "log.db"), batch_size=20_000)
    shaper = Shaper()
    records = [http_record(shaper, i % 50) for i in range(20_000)]
    assert writer._write(records[:50], 0.0) is None  # every combination cached: shaping runs no SQL
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            time.sleep(0.0001)
            ticks.append(time.perf_counter())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    ticker = threading.Thread(target=tick)
    try:
        ticker.start()
        time.sleep(0.01)
        shaped = []
        started = time.perf_counter()
        original = shaper.rows_into

        def timed_rows_into(*args):
            added = original(*args)
            shaped.append(time.perf_counter())
            return added

        shaper.rows_into = timed_rows_into
        assert writer._write(records, 0.0) is None
    finally:
        stop.set()
        sys.setswitchinterval(interval)
        ticker.join()
        writer._conn.close()
    shaping = shaped[-1] - started
    assert shaping > 0.02, shaping  # long enough that one uninterrupted stretch would show
    # Handed over about every 0.5 ms: dozens of ticks while shaping, where none would come otherwise.
    during = sum(1 for at in ticks if started < at < shaped[-1])
    assert during >= shaping / 0.005, (during, shaping)
    conn = sqlite3.connect(writer.file)
    assert conn.execute("select count(*) from request_log").fetchone() == (20_050,)
    conn.close()


def test_a_large_batch_of_plain_and_full_rows_goes_in_whole_with_consecutive_ids(tmp_path):
    """Rows are inserted as the batch is shaped, the plain ones (schema.COMMON_COLUMNS) and the ones
    with every column in turn: all of them go in once, each with its own values, and the rollups
    count them all."""
    writer = Writer(str(tmp_path / "log.db"), batch_size=5_000)
    plain, full = Shaper(), Shaper(sample_rate=0.5)  # a sampled middleware's rows bind every column
    records = [http_record(plain if i % 3 else full, i) for i in range(3_001)]
    assert writer._write(records, 0.0) is None and writer._add_tally()
    conn = sqlite3.connect(writer.file)
    try:
        assert conn.execute("select count(*), max(id) - min(id) + 1 from request_log").fetchone() == (3_001, 3_001)
        paths = sorted(name for (name,) in conn.execute(
            "select p.name from request_log r join paths p on p.id = r.path_id"))
        assert paths == sorted(f"/page/{i}" for i in range(3_001))
        sampled = conn.execute("select p.name from request_log r join paths p on p.id = r.path_id "
                               "where r.sample_rate = 0.5").fetchall()
        assert sorted(name for (name,) in sampled) == sorted(f"/page/{i}" for i in range(0, 3_001, 3))
        assert conn.execute("select sum(hits) from rollup_hourly").fetchone() == (3_001,)
    finally:
        conn.close()
        writer._conn.close()
