"""The reading side of the `asgi-log-to-sqlite` command line: stats, tail, check, and what every command shares.

Every log here is written by the real middleware from real requests (httpx.ASGITransport); the
commands run through click's CliRunner, and through the installed console script where a real
process matters (tail -f, signals, exit statuses).
"""
import asyncio
import csv
import io
import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from unittest import mock

import httpx
import pytest
from click.testing import CliRunner

import asgi_log_to_sqlite
from asgi_log_to_sqlite import AsgiLogToSqlite
from asgi_log_to_sqlite.cli import cli

from conftest import BIN, ROOT, TESTS, run, subprocess_env

DAY_MS = 86_400_000
BOT = "Googlebot/2.1 (+http://www.google.com/bot.html)"
HUMAN = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
# (path, agent, how many): what the log holds. OLD is logged three days ago, TRAFFIC now.
OLD = [("/archive/2024", HUMAN, 3)]
TRAFFIC = OLD + [
    ("/", HUMAN, 3), ("/api/items?page=2", HUMAN, 2), ("/api/items/1", BOT, 1), ("/missing", BOT, 2),
    ("/api/boom", HUMAN, 1), ("/old", HUMAN, 1), ("/health", HUMAN, 2),
]
LOGGED = 13  # every request above but the two excluded /health ones


async def app(scope, receive, send):
    """404 for /missing, 500 for /api/boom, a redirect for /old, else 200 with a body as long as the path."""
    path = scope["path"]
    status = {"/missing": 404, "/api/boom": 500, "/old": 302}.get(path, 200)
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": path.encode()})


async def requests(file, traffic, **options):
    """Send ``traffic`` through AsgiLogToSqlite into ``file``, then close the writer (every row written)."""
    logged = AsgiLogToSqlite(app, str(file), exclude=["/health"], **options)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=logged), base_url="http://testserver") as client:
        for path, agent, times in traffic:
            for _ in range(times):
                await client.get(path, headers={"user-agent": agent})
    assert logged.close()


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    file = tmp_path_factory.mktemp("cli") / "filled.db"
    real = time.time
    # The wall clock three days back while OLD is logged: its rows, and their rollups, are as old as
    # if they had been logged then.
    with mock.patch("time.time", lambda: real() - 3 * DAY_MS / 1000):
        asyncio.run(requests(file, OLD))
    asyncio.run(requests(file, TRAFFIC[len(OLD):]))
    return file


@pytest.fixture
def log(filled, tmp_path):
    """A copy of the filled log, for a test to read or change."""
    path = tmp_path / "requests.db"
    shutil.copy(filled, path)
    return str(path)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, *words):
    """The command failed with exit 1 and a single `Error: ...` line holding ``words``, no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.output


def stats_json(*args):
    result = invoke("stats", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# ---- stats ------------------------------------------------------------------------------------

def test_stats_table_has_a_titled_section_for_each_part(log):
    result = invoke("stats", log)
    assert result.exit_code == 0, result.output
    for title in ("Summary of", "Traffic per day", "Status", "Top paths", "Top 4xx paths", "Top 5xx paths",
                  "Duration (ms", "Bots and humans", "Top bots", "Not logged (log_counters"):
        assert title in result.output, title
    # The 3-day-old rows make the span longer than two days: traffic goes per day, else per hour.
    assert "Traffic per hour" in stats_table(log, "--since", "24h")


def stats_table(*args):
    result = invoke("stats", *args)
    assert result.exit_code == 0, result.output
    return result.output


def test_stats_counts_what_was_logged(log):
    report = stats_json(log)
    summary = report["summary"]
    assert summary["requests"] == LOGGED
    assert summary["bytes_sent"] == sum(len(path.split("?")[0]) * n for path, _, n in TRAFFIC if path != "/health")
    assert summary["distinct_paths"] == 7
    status = {row["class"]: row["requests"] for row in report["status"]}
    assert status == {"2xx": 9, "3xx": 1, "4xx": 2, "5xx": 1}
    assert report["top_paths"][0]["path"] in ("/", "/archive/2024") and report["top_paths"][0]["requests"] == 3
    assert report["top_4xx_paths"] == [{"path": "/missing", "requests": 2, "statuses": "404: 2"}]
    assert report["top_5xx_paths"] == [{"path": "/api/boom", "requests": 1, "statuses": "500: 1"}]
    durations = report["duration_ms"]
    assert 0 < durations["p50"] <= durations["p95"] <= durations["p99"] <= durations["max"]
    kinds = {row["kind"]: row["requests"] for row in report["agents"]}
    assert sum(kinds.values()) == LOGGED
    # The two excluded /health requests are counted, and said not to be lost.
    [excluded] = [row for row in report["not_logged"] if row["reason"] == "excluded"]
    assert excluded["count"] == 2 and excluded["meaning"].startswith("kept out on purpose")


def test_stats_percentiles_are_the_nearest_rank_of_the_raw_durations(log):
    conn = sqlite3.connect(log)
    durations = sorted(d for (d,) in conn.execute("SELECT duration_us FROM request_log"))
    conn.close()
    report = stats_json(log)["duration_ms"]
    # Nearest rank: the ceil(q * n)-th smallest.
    assert report["p50"] == round(durations[-(-len(durations) * 50 // 100) - 1] / 1000, 3)
    assert report["p99"] == round(durations[-1] / 1000, 3) == report["max"]


def test_stats_top_limits_each_list(log):
    report = stats_json(log, "--top", "2")
    assert len(report["top_paths"]) == 2


def test_stats_bots_come_from_the_agent_classes(log):
    conn = sqlite3.connect(log)
    classified = conn.execute("SELECT count(*) FROM user_agents WHERE is_bot IS NOT NULL").fetchone()[0]
    with conn:
        # As a person correcting the classification would (docs/agents.md): the lookup row decides.
        conn.execute("UPDATE user_agents SET is_bot = (name LIKE 'Googlebot%')")
    conn.close()
    report = stats_json(log)
    kinds = {row["kind"]: (row["requests"], row["agents"]) for row in report["agents"]}
    assert kinds == {"human": (LOGGED - 3, 1), "bot": (3, 1), "unknown": (0, 0)}, classified
    assert report["top_bots"] == [{"agent": BOT, "requests": 3}]


def test_stats_lost_rows_are_listed_with_their_meaning(log):
    conn = sqlite3.connect(log)
    with conn:
        # What the writer stores when its queue overflowed (counters.py's upsert).
        conn.execute("INSERT INTO log_counters (reason, count, first_ms, last_ms) VALUES ('queue_full', 7, 1, 2)")
    conn.close()
    report = stats_json(log)
    [lost] = [row for row in report["not_logged"] if row["reason"] == "queue_full"]
    assert lost["count"] == 7 and lost["meaning"].startswith("lost: ")
    assert "queue_full" in stats_table(log)


def test_stats_relative_since_and_until(log):
    assert stats_json(log, "--since", "24h")["summary"]["requests"] == LOGGED - 3
    assert stats_json(log, "--since", "7d")["summary"]["requests"] == LOGGED
    assert stats_json(log, "--until", "2d")["summary"]["requests"] == 3
    assert stats_json(log, "--since", "4d", "--until", "2d")["top_paths"][0]["path"] == "/archive/2024"
    assert stats_json(log, "--since", "90m")["summary"]["requests"] == LOGGED - 3


def test_stats_iso_since_and_a_bare_until_date_includes_that_day(log):
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert stats_json(log, "--since", today)["summary"]["requests"] >= LOGGED - 3
    # A bare --until date runs to the end of that day, so today's rows are in.
    assert stats_json(log, "--until", today)["summary"]["requests"] == LOGGED
    report = stats_json(log, "--since", "2000-01-01T00:00:00Z", "--until", "2000-01-02")
    assert report["summary"]["requests"] == 0 and report["since"] == "2000-01-01T00:00:00.000Z"


def test_stats_csv_is_one_value_per_line(log):
    result = invoke("stats", log, "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.output)))
    assert rows[0] == ["section", "key", "metric", "value"]
    assert all(len(row) == 4 for row in rows)
    assert ["summary", "", "requests", str(LOGGED)] in rows
    assert ["top_4xx_paths", "/missing", "requests", "2"] in rows
    assert ["status", "5xx", "requests", "1"] in rows
    assert ["report", "", "file", log] in rows


def test_stats_on_a_new_empty_log(tmp_path):
    path = str(tmp_path / "empty.db")
    asgi_log_to_sqlite.create_file(path)
    report = stats_json(path)
    assert report["summary"]["requests"] == 0 and report["duration_ms"]["p50"] is None
    assert "(none)" in stats_table(path)


def test_stats_counts_sampled_rows_by_their_weight(tmp_path):
    path = tmp_path / "sampled.db"
    asyncio.run(requests(path, [("/", HUMAN, 40)], sample_rate=0.5))
    summary = stats_json(path)["summary"]
    assert summary["estimated_requests"] == 2 * summary["requests"]


def test_stats_reads_the_rollups_of_hours_whose_raw_rows_were_pruned(tmp_path):
    path = tmp_path / "pruned.db"
    asyncio.run(requests(path, [("/gone", HUMAN, 6), ("/missing", BOT, 2), ("/kept", HUMAN, 4)]))
    before = stats_json(path)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM request_log WHERE id <= 8")  # the oldest rows, as retention prunes them
    conn.close()
    after = stats_json(path)
    assert after["summary"]["requests"] == 12 and "from_rollups" in after["summary"]
    assert {row["path"]: row["requests"] for row in after["top_paths"]} == {"/gone": 6, "/kept": 4, "/missing": 2}
    assert after["top_4xx_paths"] == [{"path": "/missing", "requests": 2, "statuses": "4xx: 2"}]
    assert after["status"] == before["status"] and after["traffic"][0]["requests"] == 12
    assert sum(row["requests"] for row in after["agents"]) == 12
    for name in ("p50", "p95", "p99"):
        # The rollups' latency buckets: each within 4.4% (and the 3-decimal rounding of sub-ms times).
        assert abs(after["duration_ms"][name] - before["duration_ms"][name]) <= 0.05 * before["duration_ms"][name] + 0.001
    assert "Duration (ms; from hourly rollups" in stats_table(path)
    # A range that starts inside the hour leaves that cut hour to the raw rows: the 4 kept.
    hour = time.strftime("%Y-%m-%dT%H:00:00", time.gmtime(newest_start(path)))
    assert stats_json(path, "--since", hour + ".000Z")["summary"]["requests"] == 12
    assert stats_json(path, "--since", hour + ".001Z")["summary"]["requests"] == 4


def newest_start(path):
    """When the newest row of ``path`` started, in epoch seconds."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT max(start_ms) FROM request_log").fetchone()[0] / 1000
    finally:
        conn.close()


@pytest.mark.parametrize("option, value", [("--since", "yesterday"), ("--until", "7 parsecs"), ("--since", "2024-13-01")])
def test_stats_bad_time_is_one_line(log, option, value):
    one_line_error(invoke("stats", log, option, value), option, repr(value), "24h")


def test_stats_since_after_until_is_one_line(log):
    one_line_error(invoke("stats", log, "--since", "1h", "--until", "2d"), "is not before")


# ---- tail -------------------------------------------------------------------------------------

def tail_lines(*args):
    result = invoke("tail", *args)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_tail_prints_the_last_rows_like_an_access_log_newest_last(log):
    lines = tail_lines(log, "-n", "4")
    assert [line.split()[3] for line in lines] == ["/missing", "/missing", "/api/boom", "/old"]
    assert lines[-1].split()[1:6] == ["127.0.0.0", "GET", "/old", "302", str(len("/old"))]
    assert lines[-1].endswith(json.dumps(HUMAN))
    assert len(tail_lines(log)) == 10


def test_tail_filters_by_status_class_code_and_path_prefix(log):
    assert [line.split()[3] for line in tail_lines(log, "--status", "5xx")] == ["/api/boom"]
    assert [line.split()[3] for line in tail_lines(log, "--status", "404")] == ["/missing", "/missing"]
    both = tail_lines(log, "--status", "4xx", "--status", "5xx")
    assert [line.split()[4] for line in both] == ["404", "404", "500"]
    paths = [line.split()[3] for line in tail_lines(log, "--path-prefix", "/api", "-n", "50")]
    assert paths == ["/api/items?page=2", "/api/items?page=2", "/api/items/1", "/api/boom"]
    assert tail_lines(log, "--path-prefix", "/api/*") == []  # glob characters are literal


def test_tail_json_is_one_object_per_line(log):
    lines = tail_lines(log, "--json", "--status", "3xx")
    [row] = [json.loads(line) for line in lines]
    assert (row["path"], row["http_status"], row["method"], row["user_agent"]) == ("/old", 302, "GET", HUMAN)
    assert row["start"].endswith("Z") and row["duration_ms"] > 0


def test_tail_csv_has_a_header(log):
    rows = list(csv.reader(io.StringIO("\n".join(tail_lines(log, "--csv", "-n", "2")))))
    assert rows[0][:3] == ["id", "start", "client_ip"] and len(rows) == 3


def test_tail_bad_status_is_one_line(log):
    one_line_error(invoke("tail", log, "--status", "6xx"), "--status '6xx'", "4xx")


def test_tail_reads_the_newest_file_of_a_dated_pattern(tmp_path):
    pattern = str(tmp_path / "requests-%Y-%m.db")
    asyncio.run(requests(pattern, [("/this-month", HUMAN, 1)]))
    [line] = tail_lines(pattern)
    assert "/this-month" in line


class Lines:
    """The lines a process prints, read on a thread, so a test can wait for one with a timeout."""

    def __init__(self, stream):
        self.queue = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            self.queue.put(line)
        self.queue.put(None)

    def wait_for(self, text, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout} s")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_tail_follow_prints_rows_written_after_it_started_and_stops_cleanly(log, stop):
    process = subprocess.Popen([str(BIN / "asgi-log-to-sqlite"), "tail", log, "-f", "-n", "1", "--json",
                                "--interval", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=subprocess_env())
    try:
        lines = Lines(process.stdout)
        lines.wait_for("/old")  # the newest row: it is following now
        asyncio.run(requests(log, [("/written-after", BOT, 1)]))
        row = json.loads(lines.wait_for("/written-after"))
        assert row["user_agent"] == BOT
        process.send_signal(stop)
        assert process.wait(timeout=10) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_tail_follow_moves_to_a_file_replaced_at_the_path(log, tmp_path):
    process = subprocess.Popen([str(BIN / "asgi-log-to-sqlite"), "tail", log, "-f", "-n", "1", "--interval", "0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        lines = Lines(process.stdout)
        lines.wait_for("/old")  # following the first file now
        fresh = tmp_path / "fresh.db"
        asyncio.run(requests(fresh, [("/in-the-new-file", HUMAN, 1)]))
        os.replace(fresh, log)  # a rotation by rename
        lines.wait_for("/in-the-new-file")
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


# ---- check ------------------------------------------------------------------------------------

def check_rows(*args, exit_code=0):
    result = invoke("check", *args, "--json")
    assert result.exit_code == exit_code, result.output
    return {row["check"]: row for row in json.loads(result.output)}


def test_check_a_healthy_log(log):
    result = invoke("check", log)
    assert result.exit_code == 0, result.output
    rows = check_rows(log)
    assert {rows[name]["status"] for name in ("integrity", "schema", "lost rows", "wal", "free space")} == {"ok"}
    assert rows["schema"]["detail"] == f"version {asgi_log_to_sqlite.SCHEMA_VERSION}"
    assert "excluded 2" in rows["not lost"]["detail"]


def test_check_full_runs_integrity_check(log):
    assert check_rows(log, "--full")["integrity"]["detail"] == "PRAGMA integrity_check: ok"


def test_check_a_corrupted_file_exits_1(log):
    conn = sqlite3.connect(log)
    root, page_size = conn.execute("SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master "
                                   "WHERE name = 'request_log'").fetchone()
    conn.close()
    with open(log, "r+b") as file:
        # The b-tree page type byte: no valid page has type 0, so every read of the table fails,
        # whatever the rows' layout (bytes over the cells may read back as plausible values).
        file.seek((root - 1) * page_size)
        file.write(b"\x00")
    result = invoke("check", log)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert check_rows(log, exit_code=1)["integrity"]["status"] == "problem"
    # stats cannot read it either, and says so in one line.
    one_line_error(invoke("stats", log), log, "malformed")


def test_check_a_file_that_is_not_sqlite_exits_1(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the pages you are looking for\n" * 200)
    one_line_error(invoke("check", path), "not a SQLite database")


def test_check_a_sqlite_file_that_is_not_a_log_exits_1(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE dogs (name TEXT)")
    conn.close()
    one_line_error(invoke("check", path), "not a request log")


def test_check_a_0_1_1_log_says_how_to_upgrade(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(TESTS / "fixtures" / "log-0.1.1.db", path)
    one_line_error(invoke("check", path), "0.1.1", "create_file")


def test_check_an_older_schema_is_a_warning_that_says_how_to_upgrade(tmp_path):
    path = str(tmp_path / "v1.db")
    conn = sqlite3.connect(path)
    conn.executescript((TESTS / "fixtures" / "schema-v1.sql").read_text() + "\nPRAGMA user_version = 1;")
    conn.close()
    schema = check_rows(path)["schema"]
    assert schema["status"] == "warning" and "create_file" in schema["detail"]
    assert invoke("check", path, "--strict").exit_code == 1
    # stats reads it too: a version 1 file has no agent classes, so every agent is unknown.
    assert stats_json(path)["summary"]["requests"] == 0
    asgi_log_to_sqlite.create_file(path)
    assert check_rows(path)["schema"]["status"] == "ok"


def test_check_lost_rows_are_a_warning(log):
    conn = sqlite3.connect(log)
    with conn:
        conn.execute("INSERT INTO log_counters (reason, count, first_ms, last_ms) VALUES ('disk_full', 5, 1, 2)")
    conn.close()
    row = check_rows(log)["lost: disk_full"]
    assert row["status"] == "warning" and row["detail"].startswith("5 rows")
    assert invoke("check", log, "--strict").exit_code == 1


def test_check_the_size_budget(log):
    size_mb = os.path.getsize(log) / 1024 / 1024
    assert check_rows(log, "--max-size-mb", size_mb * 4)["size"]["status"] == "ok"
    assert check_rows(log, "--max-size-mb", size_mb * 1.05)["size"]["status"] == "warning"
    over = check_rows(log, "--max-size-mb", size_mb / 2, exit_code=1)["size"]
    assert over["status"] == "problem" and "over it" in over["detail"]


def test_check_without_a_budget_uses_the_default_one(log):
    from asgi_log_to_sqlite import retention

    detail = check_rows(log)["size"]["detail"]
    assert f"{retention.default_budget_mb(log):,g} MB" in detail and "default" in detail


# ---- what every command shares ------------------------------------------------------------------

@pytest.mark.parametrize("command", ["stats", "tail", "check"])
def test_a_missing_file_or_a_directory_is_one_line(command, tmp_path):
    one_line_error(invoke(command, tmp_path / "nope.db"), "nope.db: no such file")
    one_line_error(invoke(command, tmp_path), "is a directory")


def test_a_dated_pattern_where_one_file_is_wanted_names_the_newest(tmp_path):
    pattern = str(tmp_path / "requests-%Y-%m.db")
    asyncio.run(requests(pattern, [("/", HUMAN, 1)]))
    one_line_error(invoke("stats", pattern), "dated pattern", time.strftime("requests-%Y-%m.db", time.gmtime()))


def test_times_take_iso_forms_offsets_and_ages():
    from asgi_log_to_sqlite.cli.output import parse_time

    may = 1714521600000  # 2024-05-01T00:00:00Z
    assert parse_time("2024-05-01") == parse_time("2024-05-01T00:00") == parse_time("2024-05-01T00:00:00Z") == may
    assert parse_time("2024-05-01T02:00:00+02:00") == may
    assert parse_time("2024-05-01", end=True) == may + DAY_MS
    assert parse_time("2024-05-01T12:00", end=True) == may + DAY_MS // 2  # a time is exact, even for --until
    now = 1_800_000_000_000
    assert [parse_time(age, now_ms=now) for age in ("90s", "90m", "1.5h", "7d", "2w", "now")] == [
        now - 90_000, now - 5_400_000, now - 5_400_000, now - 7 * DAY_MS, now - 14 * DAY_MS, now]
    with pytest.raises(ValueError, match="'7 parsecs': expected an ISO date or time"):
        parse_time("7 parsecs")


def test_every_command_help_has_an_example():
    commands = [[]] + [[name] for name in sorted(cli.commands)]
    assert {"stats", "tail", "check"} <= set(cli.commands)
    for command in commands:
        result = invoke(*command, "--help")
        assert result.exit_code == 0, result.output
        assert "Example:" in result.output, command
        example = result.output.split("Example:", 1)[1]
        assert f"asgi-log-to-sqlite {command[0] if command else ''}" in example, (command, example)


def test_the_console_script_and_python_m_run_the_same_cli(log):
    done = run("asgi-log-to-sqlite", "stats", log, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["requests"] == LOGGED
    done = run("python", "-m", "asgi_log_to_sqlite", "check", log)
    assert done.returncode == 0 and "integrity" in done.stdout, done.stderr
    done = run("asgi-log-to-sqlite", "stats", ROOT / "nope.db")
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [f"Error: {ROOT / 'nope.db'}: no such file"]
    assert done.stdout == ""
