"""The logger under real server processes: several writers on one file, signals, Datasette's lifespan."""
import concurrent.futures
import json
import signal
import sqlite3
import subprocess
import time

import httpx
import pytest
import sqlite_utils

from conftest import DATASETTE_MAJOR, KEY, checked, free_port, rows, running_server, subprocess_env


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
    finally:
        db.close()


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
