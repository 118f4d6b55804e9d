"""Dated log files: each row in the file of its request's start time, switched by every writer on its own."""
import asyncio
import calendar
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from asgi_log_to_sqlite import SCHEMA_VERSION, AsgiLogToSqlite, create_file
from asgi_log_to_sqlite.rotation import DatedPath, is_dated
from conftest import checked, ok, scope_for, serve, subprocess_env

# One file per second: boundaries come every second, so a test crosses several in a few seconds.
PER_SECOND = "log-%Y%m%d-%H%M%S.db"


def utc_ms(*fields):
    return calendar.timegm(fields + (0,) * (6 - len(fields))) * 1000


def file_rows(path):
    """(start_ms, path) of every row of one dated file, after checking it is a sound log database."""
    conn = checked(sqlite3.connect(path))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        return conn.execute("select r.start_ms, p.name from request_log r join paths p on p.id = r.path_id").fetchall()
    finally:
        conn.close()


def assert_every_row_in_its_file(pattern):
    """Every row's start time falls in its file's period; returns all rows of all files."""
    dated = DatedPath(pattern)
    everything = []
    files = dated.existing()
    assert files
    for path in files:
        found = file_rows(path)
        for start_ms, _ in found:
            assert dated.path_for(start_ms) == path, (start_ms, path)
        everything += found
    return everything


@pytest.mark.parametrize("moment, first, last", [
    # A month, across a year's end; a leap February; an ISO week across a year's end; a plain day.
    ((2026, 12, 31, 23, 59, 59), (2026, 12, 1), (2027, 1, 1)),
    ((2028, 2, 29, 12), (2028, 2, 1), (2028, 3, 1)),
])
def test_a_monthly_pattern_bounds_each_calendar_month(moment, first, last):
    dated = DatedPath("logs/requests-%Y-%m.db")
    at = utc_ms(*moment) + 999
    assert dated.bounds(at) == (utc_ms(*first), utc_ms(*last))
    assert dated.path_for(utc_ms(*first)) == dated.path_for(utc_ms(*last) - 1) != dated.path_for(utc_ms(*last))


def test_week_and_day_periods():
    week = DatedPath("w-%G-W%V.db")
    # Thursday 31 December 2026 is in ISO week 53 of 2026, Monday 28 December to Sunday 3 January.
    assert week.bounds(utc_ms(2026, 12, 31, 10)) == (utc_ms(2026, 12, 28), utc_ms(2027, 1, 4))
    assert week.path_for(utc_ms(2027, 1, 3, 23)) == "w-2026-W53.db"
    day = DatedPath("d-%Y-%m-%d.db")
    assert day.bounds(utc_ms(2026, 3, 1, 5)) == (utc_ms(2026, 3, 1), utc_ms(2026, 3, 2))


def test_hostname_goes_into_the_name(tmp_path):
    import socket
    dated = DatedPath(str(tmp_path / "{hostname}-%Y-%m.db"))
    name = os.path.basename(dated.path_for(utc_ms(2026, 5, 2)))
    assert name == f"{socket.gethostname().split('.')[0]}-2026-05.db"
    assert is_dated("logs/{hostname}.db") and not is_dated("logs/100%%.db") and not is_dated("log.db")


@pytest.mark.parametrize("pattern, message", [
    ("log-%Q.db", "unsupported directive(s) %Q"),
    ("log-%m.db", "without %Y"),
    ("log-%Y-%m-%H.db", "without %d"),
    ("log-%V.db", "%V (ISO week) needs %G"),
])
def test_a_pattern_that_cannot_name_each_period_is_refused_at_construction(tmp_path, pattern, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AsgiLogToSqlite(ok, str(tmp_path / pattern))


def test_keep_files_needs_a_pattern_and_a_whole_number(tmp_path):
    with pytest.raises(ValueError, match="keep_files=3 needs a dated file pattern"):
        AsgiLogToSqlite(ok, str(tmp_path / "log.db"), keep_files=3)
    with pytest.raises(ValueError, match="keep_files=0: expected a whole number"):
        AsgiLogToSqlite(ok, str(tmp_path / "log-%Y-%m.db"), keep_files=0)


def test_existing_files_sort_by_period_and_keep_n_deletes_the_oldest(tmp_path):
    dated = DatedPath(str(tmp_path / "req-%Y-%m.db"))
    for month in (11, 2, 12, 1):
        for suffix in ("", "-wal"):
            (tmp_path / f"req-2026-{month:02d}.db{suffix}").write_text("")
    (tmp_path / "req-notes.db").write_text("")
    assert [os.path.basename(p) for p in dated.existing()] == [f"req-2026-{m:02d}.db" for m in (1, 2, 11, 12)]
    deleted = dated.delete_beyond(2, current=str(tmp_path / "req-2026-12.db"))
    assert [os.path.basename(p) for p in deleted] == ["req-2026-01.db", "req-2026-02.db"]
    assert sorted(os.listdir(tmp_path)) == ["req-2026-11.db", "req-2026-11.db-wal", "req-2026-12.db",
                                            "req-2026-12.db-wal", "req-notes.db"]


@pytest.mark.asyncio
async def test_rows_go_to_the_file_of_their_start_time_across_boundaries(tmp_path):
    pattern = str(tmp_path / PER_SECOND)
    app = AsgiLogToSqlite(ok, pattern, batch_size=50)
    sent = 0
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        await serve(app, [scope_for(f"/n/{sent + i}") for i in range(20)])
        sent += 20
        await asyncio.sleep(0.01)
    assert app.flush()
    everything = assert_every_row_in_its_file(pattern)
    assert len(everything) == sent
    assert len(DatedPath(pattern).existing()) >= 3
    assert app.stats()["counted"] == {}


@pytest.mark.asyncio
async def test_a_request_that_spans_a_boundary_goes_to_the_file_it_started_in(tmp_path):
    pattern = str(tmp_path / PER_SECOND)

    async def slow(scope, receive, send):
        if scope["path"] == "/slow":
            await asyncio.sleep(1.3)
        await ok(scope, receive, send)

    app = AsgiLogToSqlite(slow, pattern, batch_size=10)
    started = time.time() * 1000
    slow_request = asyncio.ensure_future(serve(app, [scope_for("/slow")]))
    while not slow_request.done():
        await serve(app, [scope_for("/fast")])
        await asyncio.sleep(0.05)
    assert app.flush()
    dated = DatedPath(pattern)
    everything = assert_every_row_in_its_file(pattern)
    [(slow_start, _)] = [row for row in everything if row[1] == "/slow"]
    assert abs(slow_start - started) < 200
    # Written after newer rows had already moved the writer on, into its own (older) file.
    assert dated.path_for(slow_start) != dated.path_for(max(start for start, _ in everything))


@pytest.mark.asyncio
async def test_keep_files_keeps_the_newest_n(tmp_path):
    pattern = str(tmp_path / PER_SECOND)
    app = AsgiLogToSqlite(ok, pattern, keep_files=2, batch_size=5)
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        await serve(app, [scope_for("/k")])
        assert app.flush()
        await asyncio.sleep(0.1)
    names = sorted(name for name in os.listdir(tmp_path) if name.endswith(".db"))
    assert len(names) == 2
    assert [os.path.basename(p) for p in DatedPath(pattern).existing()] == names


def test_create_file_with_a_pattern_creates_the_present_file(tmp_path):
    pattern = str(tmp_path / "%Y" / "requests-%m.db")
    made = create_file(pattern)
    assert made == DatedPath(pattern).path_for(time.time() * 1000) and os.path.exists(made)
    assert file_rows(made) == []


PROCESS = textwrap.dedent("""
    import asyncio, sys, time
    from asgi_log_to_sqlite import AsgiLogToSqlite
    from conftest import ok, scope_for, serve

    async def main(pattern, name, seconds):
        app = AsgiLogToSqlite(ok, pattern, batch_size=40)
        sent = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await serve(app, [scope_for(f"/{name}/{sent + i}") for i in range(10)])
            sent += 10
            await asyncio.sleep(0.005)
        assert app.close()
        print(sent)

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
""")


def test_two_processes_switch_files_on_their_own_and_lose_nothing(tmp_path):
    pattern = str(tmp_path / PER_SECOND)
    processes = {
        name: subprocess.Popen([sys.executable, "-c", PROCESS, pattern, name, "3"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=subprocess_env())
        for name in ("a", "b")
    }
    sent = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        sent[name] = int(out.strip())
    everything = assert_every_row_in_its_file(pattern)
    for name in processes:
        assert sum(1 for _, path in everything if path.startswith(f"/{name}/")) == sent[name] > 0
    # Several boundaries were crossed while both wrote.
    assert len(DatedPath(pattern).existing()) >= 3
    for path in DatedPath(pattern).existing():
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("select count(*) from log_counters").fetchone()[0] == 0
        finally:
            conn.close()
