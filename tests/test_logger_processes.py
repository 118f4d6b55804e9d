"""The logger under real server processes: several writers on one file, signals, Datasette's lifespan."""
import concurrent.futures
import json
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest
import sqlite_utils

from conftest import DATASETTE_MAJOR, KEY, checked, free_port, rows, running_server, subprocess_env, write_one_request


def load(ports, per_port, concurrency=8):
    """Send per_port GETs to each port, concurrently (kept-alive connections); return the statuses."""
    def one_port(port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            return [client.get(f"/items/{i}", params={"n": i}).status_code for i in range(per_port // 2)]

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        # Two connections per server.
        return [s for statuses in pool.map(one_port, [p for p in ports for _ in range(2)]) for s in statuses]


def stop(process, sig=signal.SIGTERM, timeout=30):
    """Signal a server and wait. uvicorn re-raises the signal after a graceful shutdown, so -sig is clean too."""
    process.send_signal(sig)
    code = process.wait(timeout)
    assert code in (0, -sig), f"exit {code}"
    return 0


def check_log(path, expected_rows):
    db = sqlite_utils.Database(path)
    try:
        checked(db.conn)
        assert db["request_log"].count == expected_rows
        assert list(db["log_counters"].rows) == []
        # One lookup row per distinct path, however many processes saw it first at the same time.
        assert db["paths"].count == db.execute("select count(distinct path_id) from request_log").fetchone()[0]
        assert_rollups_count_every_row(db.conn)
    finally:
        db.close()


def assert_rollups_count_every_row(conn):
    """The rollups hold each (hour, route or path) as often as request_log does, and their watermark is at the end."""
    raw = conn.execute("select start_ms / 3600000, coalesce(route_id, -path_id), count(*) from request_log "
                       "group by 1, 2 order by 1, 2").fetchall()
    rolled = conn.execute("select hour, case when route_id > 0 then route_id else -path_id end, sum(hits) "
                          "from rollup_hourly group by 1, 2 order by 1, 2").fetchall()
    assert rolled == raw
    assert conn.execute("select sum(hits) from rollup_daily").fetchone()[0] == sum(n for _, _, n in raw)
    newest = conn.execute("select max(id) from request_log").fetchone()[0]
    assert conn.execute("select value from log_meta where key = 'rollups_to'").fetchone() == (str(newest),)


def logger_config(tmp_path, log_file):
    config = tmp_path / "middleware.json"
    config.write_text(json.dumps([{"class": "asgi_log_to_sqlite.AsgiLogToSqlite", "args": {"file": str(log_file)}}]))
    return config


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_four_servers_share_one_fresh_file_and_stop_without_loss(tmp_path, sig):
    log_file = tmp_path / "shared.db"
    config = logger_config(tmp_path, log_file)
    ports = [free_port() for _ in range(4)]
    commands = [["python", "-m", "datasette_configure_asgi", "serve", "examples.starlette.app:app", "--config", config,
                 "--port", port, "--no-access-log"] for port in ports]
    servers = [running_server(c, p) for c, p in zip(commands, ports)]
    processes = [s.__enter__() for s in servers]  # all four start together on a fresh file
    try:
        statuses = load(ports, per_port=150)
        assert statuses == [200] * 600
        for process in processes:
            assert stop(process, sig) == 0
    finally:
        for server in servers:
            server.__exit__(None, None, None)
    check_log(log_file, 600)


def test_uvicorn_worker_processes_log_to_one_file(tmp_path):
    log_file = tmp_path / "workers.db"
    port = free_port()
    command = ["uvicorn", "logged_app:app", "--workers", "4", "--host", "127.0.0.1", "--port", port, "--no-access-log"]
    with running_server(command, port, env=subprocess_env(LOG_FILE=str(log_file))) as process:
        assert load([port], per_port=200) == [200] * 200
        assert stop(process) == 0
    check_log(log_file, 200)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_datasette_serve_flushes_and_exits_cleanly(tmp_path, sig):
    log_file = tmp_path / "datasette-log.db"
    plugins = {"plugins": {KEY: [{"class": "asgi_log_to_sqlite.AsgiLogToSqlite", "args": {"file": str(log_file)}}]}}
    config = tmp_path / "plugins.json"
    config.write_text(json.dumps(plugins))
    option = "-c" if DATASETTE_MAJOR >= 1 else "-m"
    port = free_port()
    with running_server(["datasette", "serve", "--memory", option, config, "--port", port], port) as process:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            statuses = [client.get(f"/-/versions.json?n={i}").status_code for i in range(50)]
        assert statuses == [200] * 50
        process.send_signal(sig)
        code = process.wait(30)
        output = process.stdout.read()
    assert "Application shutdown complete." in output, output
    assert "Traceback" not in output, output
    # uvicorn re-raises the signal after a graceful shutdown. Datasette 1.0a41 without any plugin
    # then exits 1 with click's "Aborted!" on SIGINT: that is Datasette's own exit, not ours.
    assert code in (0, -sig) or (sig == signal.SIGINT and code == 1 and "Aborted!" in output), (code, output)
    paths = [row["path"] for row in rows(log_file)]
    # Datasette may make internal requests of its own; ours are all there.
    assert sum(p == "/-/versions.json" for p in paths) == 50


def test_sigterm_while_a_lock_is_held_waits_stop_timeout_then_counts(tmp_path):
    """A graceful stop meets a lock that outlasts it: the server still exits, after stop_timeout_ms,
    and says on stderr how many rows it could not write; once the lock is gone the file is whole."""
    log_file = tmp_path / "locked.db"
    config = tmp_path / "middleware.json"
    config.write_text(json.dumps([{"class": "asgi_log_to_sqlite.AsgiLogToSqlite",
                                   "args": {"file": str(log_file), "busy_timeout_ms": 200, "stop_timeout_ms": 1500}}]))
    port = free_port()
    command = ["python", "-m", "datasette_configure_asgi", "serve", "examples.starlette.app:app", "--config", config,
               "--port", port, "--no-access-log"]
    with running_server(command, port) as process:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/items/warm-up").status_code == 200
            for _ in range(100):  # the writer creates the file at the first request
                if log_file.exists() and sqlite_utils.Database(log_file)["request_log"].exists():
                    break
                time.sleep(0.05)
            holder = sqlite3.connect(log_file, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            try:
                statuses = [client.get(f"/items/{i}").status_code for i in range(20)]
                assert statuses == [200] * 20
                time.sleep(0.3)  # the writer meets the lock and holds its batch
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                code = process.wait(30)
                waited = time.monotonic() - started
                output = process.stdout.read()
            finally:
                holder.execute("ROLLBACK")
                holder.close()
    assert code in (0, -signal.SIGTERM), output
    assert 1.4 < waited < 10, (waited, output)  # stop_timeout_ms, then out
    assert "holding" in output and "stopped while the file could not be written (locked)" in output, output
    db = sqlite_utils.Database(log_file)
    try:
        checked(db.conn)
        written = db["request_log"].count
    finally:
        db.close()
    # Every count the stop could not store is on stderr, per reason: "locked=20" (and queue_full=N).
    listed = output.split("not stored in log_counters either: ")[1].splitlines()[0]
    lost = sum(int(part.split("=")[1]) for part in listed.split(", "))
    assert written + lost == 21, (written, lost, output)


_KILLED_WRITER = """
import os, signal, sys, time
from asgi_log_to_sqlite import rollups
from asgi_log_to_sqlite.record import Shaper
from asgi_log_to_sqlite.writer import Writer

rollups.ROLLUP_EVERY_S = 3600.0  # its sums are still held when it dies
writer, shaper = Writer(sys.argv[1]), Shaper()
now = time.perf_counter()
for i in range(300):
    scope = {"type": "http", "method": "GET", "path": f"/page/{i % 7}", "query_string": b"", "headers": []}
    writer.submit((shaper, scope, now, now + 0.002, None, 200, [], 10, 0, 0))
while writer.rows_written < 300:
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_before_it_adds_its_rollup_sums_leaves_its_rows_to_the_next(tmp_path):
    """kill -9 takes the rollup sums a writer holds, never their rows: they stay above the rollups'
    watermark, and the next writer of the file sums them from the raw rows."""
    from asgi_log_to_sqlite import rollups

    path = str(tmp_path / "killed.db")
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, path], env=subprocess_env(), timeout=60)
    assert done.returncode == -signal.SIGKILL
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("select count(*) from request_log").fetchone()[0] == 300
        assert rollups.WATERMARK.behind(conn) == 300
        assert conn.execute("select count(*) from rollup_hourly").fetchone()[0] == 0
    finally:
        conn.close()
    write_one_request(path, "/page/0")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert_rollups_count_every_row(conn)
        assert conn.execute("select sum(hits) from rollup_hourly").fetchone()[0] == 301
    finally:
        conn.close()

