"""The logger when the file system fails under it: a really full disk, a read-only remount, a deleted directory.

The first two mount a small tmpfs, which needs root (as on the development machines and CI);
elsewhere they are skipped with the reason.
"""
import asyncio
import os
import shutil
import sqlite3
import subprocess
import time

import pytest

from asgi_log_to_sqlite import AsgiLogToSqlite
from conftest import checked, count_prefix, ok, scope_for, serve


def run_requests(app, prefix, count, width=0):
    """Numbered requests /prefix/<n> (padded to ``width`` characters); returns the statuses."""
    return asyncio.run(serve(app, [scope_for(f"/{prefix}/{n}".ljust(width, "x")) for n in range(count)]))


def rows_for(log_file, prefix):
    """Rows logged for /prefix/...; 0 while the writer has not created the file or its tables yet."""
    try:
        conn = sqlite3.connect(f"file:{log_file}?mode=ro", uri=True)  # never create the file ourselves
    except sqlite3.OperationalError:
        return 0
    try:
        return count_prefix(conn, f"/{prefix}")
    except sqlite3.OperationalError as error:
        if "no such table" in str(error) or "unable to open" in str(error):
            return 0
        raise
    finally:
        conn.close()


def dropped(app):
    return sum(v for reason, v in app.stats()["counted"].items() if reason not in ("excluded", "sampled_out"))


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs of our own, to fill up and to remount read-only."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def remount(mount_point, options):
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount_point)], check=True)


def wait_for_rows(log_file, prefix, expected, timeout=15.0):
    """Seconds until ``expected`` rows for prefix are in the file (checked every 20 ms)."""
    started = time.monotonic()
    while rows_for(log_file, prefix) < expected:
        assert time.monotonic() - started < timeout, f"no {prefix} rows after {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_really_full_disk_holds_what_the_queue_can_and_resumes_when_space_returns(small_fs, capfd):
    log_file = str(small_fs / "log.db")
    app = AsgiLogToSqlite(ok, log_file, batch_size=1000, queue_size=3000)
    sent = 8000
    assert run_requests(app, "fill", sent, width=200) == [200] * sent  # 1.6 MB of paths for 1 MiB
    assert not app.flush(5)  # full: the batch in hand is held, not dropped
    stats = app.stats()
    lost = dropped(app)
    written = rows_for(log_file, "fill")
    assert set(stats["counted"]) == {"queue_full"} and written > 0, stats
    assert stats["held"] + stats["queued"] <= 3000  # memory stays within queue_size
    assert written + stats["held"] + stats["queued"] + lost == sent
    assert "cannot write (disk_full" in capfd.readouterr().err

    remount(small_fs, "size=16m")
    freed = time.monotonic()
    assert app.flush(60)
    resumed = time.monotonic() - freed
    assert rows_for(log_file, "fill") == sent - lost  # everything held was written
    assert run_requests(app, "after", 100) == [200] * 100
    assert app.flush(30)
    assert rows_for(log_file, "after") == 100
    assert dropped(app) == lost  # nothing more lost once there was room
    conn = checked(sqlite3.connect(log_file))
    try:
        stored = dict(conn.execute("select reason, count from log_counters"))
    finally:
        conn.close()
    assert stored == {"queue_full": lost}  # the drops reached the file once it had room
    print(f"\n{lost} of {sent} counted while the disk was full; held rows written {resumed:.2f} s after space returned")


def test_a_read_only_file_system_costs_no_row_while_the_queue_holds(small_fs, capfd):
    # Linux refuses to remount read-only while a file on it is open for writing, so the file
    # system goes read-only before the writer first opens the file, and comes back mid-run.
    log_file = str(small_fs / "log.db")
    app = AsgiLogToSqlite(ok, log_file)
    remount(small_fs, "ro")
    try:
        assert run_requests(app, "during", 50) == [200] * 50
        assert not app.flush(2)
        assert app.stats()["held"] == 50
    finally:
        remount(small_fs, "rw")
    assert app.flush(30)
    assert run_requests(app, "after", 50) == [200] * 50
    assert app.flush(30)
    assert dropped(app) == 0, app.stats()
    conn = checked(sqlite3.connect(log_file))
    try:
        assert count_prefix(conn, "/during") == 50 and count_prefix(conn, "/after") == 50
        assert list(conn.execute("select reason, count from log_counters")) == []
    finally:
        conn.close()
    err = capfd.readouterr().err
    assert "cannot write (" in err and "writing resumed after" in err


def test_a_deleted_directory_is_noticed_and_the_recreated_file_gets_what_was_held(tmp_path):
    directory = tmp_path / "logs"
    directory.mkdir()
    log_file = str(directory / "log.db")
    app = AsgiLogToSqlite(ok, log_file)
    assert run_requests(app, "before", 20) == [200] * 20
    assert app.flush(10)

    shutil.rmtree(directory)
    time.sleep(1.1)  # the writer looks at the path once a second
    assert run_requests(app, "gone", 20) == [200] * 20
    assert not app.flush(2)
    assert app.stats()["held"] == 20, app.stats()

    directory.mkdir()
    assert run_requests(app, "after", 20) == [200] * 20
    assert app.flush(30)
    conn = checked(sqlite3.connect(log_file))
    try:
        assert count_prefix(conn, "/gone") == 20 and count_prefix(conn, "/after") == 20
        assert count_prefix(conn, "/before") == 0  # those went with the deleted file
        assert list(conn.execute("select reason, count from log_counters")) == []
    finally:
        conn.close()
    assert app.stats()["counted"] == {}
    assert os.stat(log_file).st_mode & 0o777 == 0o600
