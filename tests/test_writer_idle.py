"""What the writer does between batches when no request comes: a day's visitor salt still goes when the day ends."""
import asyncio
import sqlite3
import time

from asgi_log_to_sqlite import AsgiLogToSqlite
from asgi_log_to_sqlite.rollups import DAY_S
from conftest import ok, scope_for, serve


def salt_days(path):
    conn = sqlite3.connect(path)
    try:
        return sorted(day for (day,) in conn.execute("select day from rollup_salts"))
    finally:
        conn.close()


def test_an_idle_writer_deletes_the_salt_of_a_day_that_ended(tmp_path):
    log_file = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(ok, log_file)
    asyncio.run(serve(app, [scope_for("/")]))
    assert app.flush()
    today = int(time.time() // DAY_S)
    assert salt_days(log_file) == [today]
    # A salt left from a day now over, and the writer last looked before that day ended.
    conn = sqlite3.connect(log_file)
    with conn:
        conn.execute("insert into rollup_salts (day, salt) values (?, randomblob(16))", (today - 2,))
    conn.close()
    app.writer._salts_day = today - 2
    deadline = time.monotonic() + 5
    while salt_days(log_file) != [today] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert salt_days(log_file) == [today]  # gone with no batch written meanwhile
    assert app.stats()["rows_written"] == 1
