"""The demo's traffic generator (asgi_log_to_sqlite.traffic) against a real server: the Starlette example, logged."""
import sqlite3
import time

import pytest

from conftest import free_port, run, running_server, subprocess_env


def traffic(*args, timeout=120):
    return run("python", "-m", "asgi_log_to_sqlite.traffic", *args, timeout=timeout)


@pytest.fixture
def server(tmp_path):
    """The Starlette example behind the logger, under uvicorn: (its URL, its log file)."""
    log = tmp_path / "requests.db"
    run("python", "-c", f"import asgi_log_to_sqlite as a; a.create_file({str(log)!r})")
    port = free_port()
    command = ["uvicorn", "logged_app:app", "--host", "127.0.0.1", "--port", port, "--no-access-log"]
    with running_server(command, port, env=subprocess_env(LOG_FILE=str(log))) as process:
        yield f"http://127.0.0.1:{port}", log, process


def stopped(process):
    """Stop the server gracefully: its logger writes every row before it exits."""
    process.terminate()
    process.wait(30)


def logged(log, sql):
    conn = sqlite3.connect(log)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_live_traffic_is_varied_and_every_request_is_logged(server):
    url, log, process = server
    result = traffic(url, "--requests", 200, "--seconds", 60, "--seed", 3)
    stopped(process)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("200 live requests (")
    rows = logged(log, "select path, http_status, user_agent, referer, client_ip from readable_requests")
    assert len(rows) == 200
    paths = {path for path, *_ in rows}
    assert len(paths) >= 15 and {"/", "/demo/numbers", "/demo/numbers.json"} <= paths
    assert {status for _, status, *_ in rows} == {200, 404}   # the example answers "/" and nothing else here
    agents = " ".join(agent for *_, agent, _, _ in rows)
    for agent in ("Googlebot", "bingbot", "curl/", "Firefox/", "iPhone", "Chrome/"):
        assert agent in agents
    bots = logged(log, "select u.is_bot, count(*) from request_log r join user_agents u on u.id = r.user_agent_id "
                       "group by 1")
    assert {is_bot for is_bot, _ in bots} == {0, 1}
    referers = {referer for *_, referer, _ in rows}
    assert "https://www.google.com/" in referers and f"{url}/demo" in referers and None in referers
    # Each visitor comes through X-Forwarded-For, which uvicorn believes from 127.0.0.1.
    assert len({address for *_, address in rows}) >= 50


def test_the_count_bounds_the_requests(server):
    url, log, process = server
    result = traffic(url, "--requests", 7, "--seconds", 60)
    stopped(process)
    assert result.returncode == 0, result.stderr
    assert logged(log, "select count(*) from request_log") == [(7,)]


def test_the_time_limit_bounds_the_requests(server):
    url, log, process = server
    # Two a second for one second: the limit stops it long before the thousand asked for.
    result = traffic(url, "--requests", 1000, "--seconds", 1, "--rate", 2)
    stopped(process)
    assert result.returncode == 0, result.stderr
    assert "stopped at the 1 s limit" in result.stdout
    assert logged(log, "select count(*) from request_log")[0][0] <= 3


def test_past_days_are_imported_with_the_answers_the_server_gave(server):
    url, log, process = server
    result = traffic(url, "--requests", 60, "--seconds", 60, "--log", log, "--past-requests", 500,
                     "--past-days", 10, "--seed", 5)
    stopped(process)
    assert result.returncode == 0, result.stderr
    assert "500 past requests over 10 days imported" in result.stdout
    imported = logged(log, "select count(*), count(distinct substr(start, 1, 10)), max(start_ms) "
                           "from readable_requests join request_log using (id) where request_log.flags & 256")
    count, days, newest_ms = imported[0]
    assert count == 500 and days >= 9 and newest_ms <= time.time() * 1000
    # Every past row's status is one the server gave that same path live.
    mismatched = logged(log, """
        select distinct past.path, past.http_status from readable_requests past
        where past.flags & 256 and past.http_status not in (
            select live.http_status from readable_requests live where live.flags & 256 = 0 and live.path = past.path)""")
    assert mismatched == []
    visitors = logged(log, "select count(*) from rollup_visitors_daily")
    assert visitors[0][0] >= 9  # past days counted too: the import gives each a salt of its own


def one_line_error(result, *words):
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("url, host", [
    ("http://example.com", "example.com"),
    ("http://10.0.0.1:8001", "10.0.0.1"),
    ("https://192.168.1.20/demo", "192.168.1.20"),
    ("http://127.0.0.2:8001", "127.0.0.2"),
    ("http://[2001:db8::1]:8001", "2001:db8::1"),
])
def test_any_host_but_this_machine_is_refused(url, host):
    one_line_error(traffic(url, "--requests", 1, "--seconds", 5), repr(host), "127.0.0.1, localhost, ::1")


@pytest.mark.parametrize("args, words", [
    (["ftp://127.0.0.1/", "--requests", 1, "--seconds", 5], ["'ftp://127.0.0.1/'", "http://127.0.0.1:8001"]),
    (["http://127.0.0.1:1", "--requests", -1, "--seconds", 5], ["--requests -1"]),
    (["http://127.0.0.1:1", "--requests", "many", "--seconds", 5], ["--requests", "'many'"]),
    (["http://127.0.0.1:1", "--seconds", 5], ["required", "--requests"]),
    (["http://127.0.0.1:1", "--requests", 1, "--seconds", 0], ["--seconds 0"]),
    (["http://127.0.0.1:1", "--requests", 1, "--seconds", 5, "--rate", 0], ["--rate 0"]),
    (["http://127.0.0.1:1", "--requests", 1, "--seconds", 5, "--past-requests", 10], ["needs --log"]),
    (["http://127.0.0.1:1", "--requests", 1, "--seconds", 5, "--log", "/nonexistent/requests.db",
      "--past-requests", 10], ["'/nonexistent/requests.db'", "no such file"]),
])
def test_bad_options_are_one_line_errors(args, words):
    one_line_error(traffic(*args), *words)


def test_a_server_that_is_not_there_is_one_line_error():
    port = free_port()
    one_line_error(traffic(f"http://localhost:{port}", "--requests", 3, "--seconds", 10),
                   f"'http://localhost:{port}'", "no request got an answer")


def test_a_file_that_is_not_a_log_is_one_line_error(server, tmp_path):
    url, _, _ = server
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("create table notes (text)")
    conn.close()
    one_line_error(traffic(url, "--requests", 3, "--seconds", 10, "--log", other, "--past-requests", 10),
                   "not a request log")
