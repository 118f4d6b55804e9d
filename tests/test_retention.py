"""Retention: the logger keeps its file within an age, a row count and a size, by itself and beside others.

Logs are written by the real middleware from requests (tests' ``serve``), or, where a test needs
many old rows, generated with SQL into a file made by ``create_file``. Pruning runs in the real
writer thread, through Retention on its own connection, or through the real command line
(CliRunner, and the console script where a separate process matters).
"""
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from asgi_log_to_sqlite import AsgiLogToSqlite, create_file, retention, toplists
from asgi_log_to_sqlite.cli import cli
from conftest import BIN, ROOT, TESTS, checked, ok, scope_for, serve, subprocess_env

DAY_MS = 86_400_000
MB = 2**20


def build_log(path, rows, *, days=10.0, agents=500, paths=50):
    """A log of ``rows`` rows started evenly over the last ``days`` days, written by SQL (fast)."""
    create_file(str(path))
    now = int(time.time() * 1000)
    span = int(days * DAY_MS)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table, count, name in (("paths", paths, "'/built/' || i"), ("user_agents", agents, "'Agent/' || i"),
                                   ("methods", 1, "'GET'"), ("referers", agents, "'https://r' || i || '.example/'")):
            conn.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) "
                         f"INSERT INTO {table} (name) SELECT {name} FROM n")
        # Row i uses agent and referer i % agents, so the oldest rows' values are shared with newer ones
        # only where i wraps around.
        conn.execute(f"""WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rows - 1})
            INSERT INTO request_log (start_ms, duration_us, http_status, body_size, request_size, method_id, path_id,
                                     user_agent_id, referer_id)
            SELECT {now - span} + i * {span // rows}, 1000 + i % 977, 200, 13, 0, 1, 1 + i % {paths},
                   1 + (i * {agents} / {rows}), 1 + (i * {agents} / {rows}) FROM n""")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return str(path)


def query(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count(path, table="request_log"):
    try:
        return query(path, f"select count(*) from {table}")[0][0]
    except sqlite3.OperationalError:  # a log being created: no tables yet
        return 0


def counters(path):
    return dict(query(path, "select reason, count from log_counters"))


def pruned(path):
    conn = sqlite3.connect(path)
    try:
        return retention.pruned_rows(conn)
    finally:
        conn.close()


def wait_for(condition, timeout=15.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met after {timeout} s"
        time.sleep(0.05)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def send(app, prefix, n, start=0, agent=b"tests"):
    statuses = asyncio.run(serve(app, (scope_for(f"{prefix}/{i}", agent=agent) for i in range(start, start + n))))
    assert statuses == [200] * n


# ---- each limit, applied by the writer itself -----------------------------------------------------

def test_keep_rows_keeps_the_newest_rows(tmp_path):
    log = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(ok, log, keep_rows=100)
    send(app, "/n", 1000)
    assert app.flush(10)
    wait_for(lambda: count(log) <= 101, what="pruning to keep_rows")  # 1% over before the writer prunes
    left = count(log)
    names = [name for (name,) in query(log, "select p.name from request_log r join paths p on p.id = r.path_id order by r.id")]
    assert names == [f"/n/{i}" for i in range(1000 - left, 1000)]  # the newest, in order
    assert left + pruned(log) == 1000 and counters(log) == {}


def test_keep_days_deletes_only_rows_older_than_the_limit(tmp_path):
    log = build_log(tmp_path / "log.db", 20_000, days=10)
    cutoff = int(time.time() * 1000) - 3 * DAY_MS
    younger = query(log, "select count(*) from request_log where start_ms >= ?", (cutoff + 60_000,))[0][0]
    app = AsgiLogToSqlite(ok, log, keep_days=3)
    send(app, "/now", 5)
    assert app.flush(10)
    wait_for(lambda: query(log, "select min(start_ms) from request_log")[0][0] >= cutoff, what="pruning by age")
    assert query(log, "select count(*) from request_log where start_ms >= ?", (cutoff + 60_000,))[0][0] == younger + 5
    assert 0.65 * 20_000 < pruned(log) < 0.75 * 20_000  # seven days of ten
    assert count(log) + pruned(log) == 20_005


def test_size_budget_keeps_the_newest_rows_and_loses_none(tmp_path):
    """Past the budget the oldest rows go first: every request of the last wave is kept, nothing is
    counted as lost, and the file stays within its budget."""
    log = str(tmp_path / "log.db")
    budget_mb = 1.0
    app = AsgiLogToSqlite(ok, log, max_size_mb=budget_mb, batch_size=2000, queue_size=5000)
    sent = 0
    for wave in range(20):  # ~50 bytes a row: 40,000 rows are twice the budget
        statuses = asyncio.run(serve(app, (scope_for(f"/wave{wave}/{i % 50}") for i in range(2000))))
        assert statuses == [200] * 2000
        sent += 2000
        assert app.flush(30)
    conn = checked(sqlite3.connect(log))
    try:
        pages, page_size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        assert pages * page_size <= budget_mb * MB
        rows = conn.execute("select count(*) from request_log").fetchone()[0]
        last_wave = conn.execute("select count(*) from request_log r join paths p on p.id = r.path_id "
                                 "where p.name like '/wave19/%'").fetchone()[0]
        first_wave = conn.execute("select count(*) from request_log r join paths p on p.id = r.path_id "
                                  "where p.name like '/wave0/%'").fetchone()[0]
    finally:
        conn.close()
    assert last_wave == 2000 and first_wave == 0
    assert rows + pruned(log) == sent and app.stats()["counted"] == {} and counters(log) == {}


def test_past_the_raw_rows_the_oldest_rollups_go_and_the_log_keeps_taking_rows(tmp_path):
    """A budget filled by what the rollups count (long unique paths, each kept by its hourly and daily
    totals): once only the newest raw row is left, the oldest rollup rows go, then the values only
    they named, so every request is still logged and nothing is counted as lost."""
    log = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(ok, log, max_size_mb=0.25, queue_size=300, stop_timeout_ms=200)
    sent = 0
    for wave in range(100):  # ten paths of 900 bytes a wave: about five pages, twenty times the budget
        send(app, f"/{wave}-{'x' * 900}", 10)
        sent += 10
        assert app.flush(10)
    assert app.close()
    assert app.stats()["counted"] == {} and counters(log) == {}
    assert count(log) + pruned(log) == sent
    summary = json.loads(query(log, "SELECT value FROM log_meta WHERE key = 'retention.last_prune'")[0][0])
    assert summary["rollup_rows"] > 0
    # The newest wave is counted in full by the rollups that are left; the oldest waves' totals are gone.
    hits = dict(query(log, "SELECT substr(p.name, 1, instr(p.name, '-') - 1), sum(h.hits) FROM rollup_daily h "
                           "JOIN paths p ON p.id = h.path_id GROUP BY 1"))
    assert hits.get("/99") == 10 and "/0" not in hits
    pages, page_size = (query(log, f"PRAGMA {pragma}")[0][0] for pragma in ("page_count", "page_size"))
    assert pages * page_size <= 0.25 * MB


def test_rows_are_counted_only_when_pruning_cannot_free_room(tmp_path):
    """A budget barely above an empty log's own pages: with every old row and rollup gone, a batch of
    long values still does not fit, so batches are held and what overflows the queue is counted."""
    log = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(ok, log, max_size_mb=0.16, queue_size=300, stop_timeout_ms=200)
    sent = 0
    for wave in range(100):
        send(app, f"/{wave}-{'x' * 900}", 10)
        sent += 10
        if not app.flush(3):
            break
    assert sent < 1000, "the budget never filled"
    send(app, "/more", 500)
    sent += 500
    assert set(app.stats()["counted"]) == {"queue_full"}, app.stats()
    assert app.close()  # what is still held is counted too, once stop_timeout_ms is over
    lost = app.stats()["counted"]
    assert count(log) + pruned(log) + sum(lost.values()) == sent, lost


# ---- unused lookup values, the 0.1.1 table ---------------------------------------------------------

def test_prune_removes_lookup_values_no_row_references(tmp_path):
    log = build_log(tmp_path / "log.db", 10_000, agents=500)
    conn = sqlite3.connect(log, isolation_level=None)
    # Values nothing names: left behind by rows deleted by hand, say.
    conn.executemany("INSERT INTO user_agents (name) VALUES (?)", [(f"Unused/{i}",) for i in range(40)])
    conn.executemany("INSERT INTO referers (name) VALUES (?)", [(f"https://unused{i}.example/",) for i in range(30)])
    conn.close()
    result = invoke("prune", log, "--keep-rows", 1000, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["deleted"]["rows"] == 9000
    assert report["deleted"]["user_agents_values"] == 40 and report["deleted"]["referers_values"] == 30
    # The agents and referrers only the pruned rows used stay: the top lists still count them.
    agents = {n for (n,) in query(log, "select id from user_agents")}
    assert agents == set(range(1, 501))
    assert agents == {n for (n,) in query(log, "select distinct user_agent_id from rollup_agents_daily")}
    assert query(log, "select sum(hits) from rollup_agents_daily") == [(10_000,)]
    assert count(log, "referers") == 500 and count(log, "paths") == 50
    checked(sqlite3.connect(log)).close()


def test_values_go_once_the_rollups_naming_them_go(tmp_path):
    """Past the size budget the oldest rollups go too, and then the values only they named."""
    log = build_log(tmp_path / "log.db", 10_000, agents=500)
    result = invoke("prune", log, "--keep-rows", 1000, "--json")
    assert result.exit_code == 0, result.output
    conn = sqlite3.connect(log, isolation_level=None)
    for table in toplists.TABLES:
        conn.execute(f"DELETE FROM {table}")
    conn.close()
    kept_agents = {n for (n,) in query(log, "select distinct user_agent_id from request_log")}
    result = invoke("prune", log, "--keep-rows", 1000, "--json")
    report = json.loads(result.output)
    assert {n for (n,) in query(log, "select id from user_agents")} == kept_agents
    assert report["deleted"]["user_agents_values"] == 500 - len(kept_agents)


def test_a_value_rollups_still_count_is_kept(tmp_path):
    """Rollups outlive raw rows: a path whose rows are all pruned stays while an hourly total names it."""
    log = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(ok, log)
    send(app, "/old", 50)
    send(app, "/new", 50)
    assert app.close()
    assert invoke("prune", log, "--keep-rows", 10).exit_code == 0
    assert query(log, "select count(*) from request_log r join paths p on p.id = r.path_id where p.name like '/old/%'") == [(0,)]
    assert query(log, "select count(*) from paths where name like '/old/%'") == [(50,)]
    assert query(log, "select sum(hits) from rollup_hourly") == [(100,)]


def test_lookup_values_a_running_writer_cached_are_resolved_again_after_removal(tmp_path):
    """A writer caches each value's id. Once a prune in another process has removed a value that no
    row used any more, the writer logging it again stores it again: never a dangling or reused id."""
    log = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(ok, log)
    send(app, "/pre", 1, agent=b"Common/1.0")
    send(app, "/a", 1, agent=b"Rare/1.0")  # the newest agent id: the next new agent may be given it
    send(app, "/b", 20, agent=b"Common/1.0")
    assert app.flush(10)
    for _ in range(2):
        done = subprocess.run([str(BIN / "asgi-log-to-sqlite"), "prune", log, "--keep-rows", "20"],
                              capture_output=True, text=True, env=subprocess_env(), timeout=60)
        assert done.returncode == 0, done.stderr
        # The top lists name it until their own rows go (past the size budget): gone here by hand.
        conn = sqlite3.connect(log, isolation_level=None)
        conn.execute("DELETE FROM rollup_agents_hourly")
        conn.execute("DELETE FROM rollup_agents_daily")
        conn.close()
    assert query(log, "select count(*) from user_agents where name = 'Rare/1.0'") == [(0,)]
    send(app, "/c", 1, agent=b"Newcomer/1.0")  # may be given the removed value's id
    send(app, "/d", 1, agent=b"Rare/1.0")      # cached by the writer before the removal
    assert app.flush(10)
    agents = dict(query(log, "select r.path_id, ua.name from request_log r left join user_agents ua "
                             "on ua.id = r.user_agent_id join paths p on p.id = r.path_id where p.name in ('/c/0', '/d/0')"))
    assert sorted(agents.values()) == ["Newcomer/1.0", "Rare/1.0"]
    checked(sqlite3.connect(log)).close()


def test_prune_takes_the_0_1_1_rows_first_and_their_unused_values(tmp_path):
    log = str(tmp_path / "old.db")
    shutil.copy(TESTS / "fixtures" / "log-0.1.1.db", log)
    create_file(log)  # upgraded in place: the 0.1.1 rows live on in requests_0_1
    before = query(log, "select start, path, query_string from requests_0_1 order by rowid")
    result = invoke("prune", log, "--keep-rows", 5, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["deleted"]["rows"] == report["deleted"]["rows_of_0_1_1"] == len(before) - 5
    assert query(log, "select start, path, query_string from requests_0_1 order by rowid") == before[-5:]
    assert count(log, "query_strings") == len({q for _, _, q in before[-5:] if q is not None})
    assert count(log, "requests") == 5
    checked(sqlite3.connect(log)).close()


# ---- space back to the disk ---------------------------------------------------------------------

def test_incremental_vacuum_gives_the_space_back(tmp_path):
    log = build_log(tmp_path / "log.db", 50_000)
    conn = sqlite3.connect(log, isolation_level=None)
    try:
        assert retention.catch_up(conn)  # the rollups and top lists of every row first: they stay
    finally:
        conn.close()
    size = os.path.getsize(log)
    result = invoke("prune", log, "--keep-rows", 1000, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["space"]["pages_given_back"] > 0
    assert os.path.getsize(log) < size / 2
    assert query(log, "PRAGMA freelist_count") == [(0,)]
    assert report["space"]["size_after_mb"] == pytest.approx(os.path.getsize(log) / MB, abs=0.01)


def test_vacuum_converts_an_older_file_once(tmp_path):
    log = str(tmp_path / "old.db")
    shutil.copy(TESTS / "fixtures" / "log-0.1.1.db", log)
    app = AsgiLogToSqlite(ok, log)  # a file made before incremental vacuum: auto_vacuum stays NONE
    asyncio.run(serve(app, (scope_for(f"/n/{i % 50}") for i in range(20_000))))
    assert app.close()
    assert query(log, "PRAGMA auto_vacuum") == [(0,)]
    result = invoke("prune", log, "--keep-rows", 100)
    assert result.exit_code == 0 and "run `asgi-log-to-sqlite vacuum` once" in result.output
    size = os.path.getsize(log)
    assert query(log, "PRAGMA freelist_count")[0][0] > 0  # freed, but kept in the file

    converted = invoke("vacuum", log, "--json")
    assert converted.exit_code == 0, converted.output
    assert json.loads(converted.output)["action"] == "converted to auto_vacuum=INCREMENTAL"
    assert query(log, "PRAGMA auto_vacuum") == [(2,)]
    assert os.path.getsize(log) < size / 2
    assert count(log) == 100 and count(log, "requests_0_1") == 0

    again = invoke("vacuum", log, "--json")
    assert json.loads(again.output)["action"] == "returned free pages"
    checked(sqlite3.connect(log)).close()


# ---- several processes, one file ---------------------------------------------------------------

WORKER = """
import asyncio, sys, time
from asgi_log_to_sqlite import AsgiLogToSqlite
from conftest import ok, scope_for, serve

log, name, waves = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = AsgiLogToSqlite(ok, log, keep_rows=3000, busy_timeout_ms=5000)
for wave in range(waves):
    asyncio.run(serve(app, [scope_for(f"/{name}/{wave}/{i}", agent=f"{name}-{wave % 7}".encode()) for i in range(200)]))
    time.sleep(0.02)
assert app.close(60)
print(sum(app.stats()["counted"].values()))
"""


def test_two_logging_processes_and_the_cli_prune_one_file_and_lose_nothing(tmp_path):
    """Two processes log and prune (keep_rows) while the command line prunes too: every request
    sent is either in the file or counted as pruned; none is counted as lost."""
    log = str(tmp_path / "log.db")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    waves = 40
    workers = [subprocess.Popen([sys.executable, str(script), log, name, str(waves)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=ROOT)
               for name in ("one", "two")]
    prunes = 0
    try:
        wait_for(lambda: os.path.exists(log) and count(log) > 0, what="the first rows")
        while any(worker.poll() is None for worker in workers):
            done = subprocess.run([str(BIN / "asgi-log-to-sqlite"), "prune", log, "--keep-rows", "1500", "--json"],
                                  capture_output=True, text=True, env=subprocess_env(), timeout=60)
            assert done.returncode == 0, done.stderr
            prunes += json.loads(done.stdout)["deleted"]["rows"] > 0
    finally:
        outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == ["0", "0"]  # nothing counted in either process
    sent = 2 * waves * 200
    assert prunes > 0 and pruned(log) > 0
    assert count(log) + pruned(log) == sent and counters(log) == {}
    checked(sqlite3.connect(log)).close()


def test_vacuum_conversion_beside_a_running_logger_loses_nothing(tmp_path):
    log = str(tmp_path / "old.db")
    shutil.copy(TESTS / "fixtures" / "log-0.1.1.db", log)
    create_file(log)
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace("keep_rows=3000, ", ""))
    worker = subprocess.Popen([sys.executable, str(script), log, "w", "30"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=ROOT)
    try:
        wait_for(lambda: count(log) > 500, what="the logger's first rows")
        converted = subprocess.run([str(BIN / "asgi-log-to-sqlite"), "vacuum", log], capture_output=True, text=True,
                                   env=subprocess_env(), timeout=120)
        assert converted.returncode == 0, converted.stderr
    finally:
        out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0 and out.strip() == "0", err
    assert query(log, "PRAGMA auto_vacuum") == [(2,)]
    assert count(log) == 30 * 200 and counters(log) == {}
    checked(sqlite3.connect(log)).close()


# ---- options, defaults, the command line -----------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"keep_days": 0}, r"keep_days=0: expected a positive number of days, for example 30"),
    ({"keep_days": float("inf")}, r"keep_days=inf: expected a positive number of days"),
    ({"keep_days": "30"}, r"keep_days='30': expected a positive number of days"),
    ({"keep_rows": 0}, r"keep_rows=0: expected a whole number of at least 1, for example 1000000"),
    ({"keep_rows": 1.5}, r"keep_rows=1.5: expected a whole number of at least 1"),
    ({"keep_rows": True}, r"keep_rows=True: expected a whole number of at least 1"),
    ({"max_size_mb": -1}, r"max_size_mb=-1: expected a positive number of megabytes, for example 500"),
    ({"max_size_mb": float("nan")}, r"max_size_mb=nan: expected a positive number of megabytes"),
])
def test_options_are_checked_at_construction(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        AsgiLogToSqlite(ok, str(tmp_path / "log.db"), **options)


def test_default_size_budget_is_a_tenth_of_the_file_system_within_bounds(tmp_path):
    total_mb = shutil.disk_usage(tmp_path).total / MB
    expected = min(4096, max(64, total_mb / 10))
    policy = retention.Retention(str(tmp_path / "log.db"))
    assert policy.budget_bytes == int(expected * MB)
    conn = sqlite3.connect(":memory:")
    try:
        assert policy.page_limit(conn) == int(expected * MB) // 4096
        assert retention.Retention(str(tmp_path / "log.db"), max_size_mb=float("inf")).page_limit(conn) is None
    finally:
        conn.close()
    # A dated pattern's directories need not exist yet.
    assert retention.Retention(str(tmp_path / "logs" / "%Y" / "%m.db")).budget_bytes == int(expected * MB)


def test_prune_reports_each_transaction_to_a_progress_callback(tmp_path):
    log = build_log(tmp_path / "log.db", 20_000)
    seen = []
    conn = sqlite3.connect(log, isolation_level=None)
    conn.executemany("INSERT INTO user_agents (name) VALUES (?)", [(f"Unused/{i}",) for i in range(40)])
    try:
        report = retention.Retention(log, keep_rows=10).prune(conn, progress=lambda *step: seen.append(step))
    finally:
        conn.close()
    phases = [phase for phase, _, _ in seen]
    assert phases[0] == "rows" and "vacuum" in phases and "lookups:user_agents" in phases
    rows = [(done, total) for phase, done, total in seen if phase == "rows"]
    assert rows[-1] == (19_990, 19_990)  # the estimate is exact for keep_rows
    assert report.transactions >= len(seen) and 0 < report.longest_hold < 1


def test_prune_with_no_option_applies_the_default_budget_only(tmp_path):
    log = build_log(tmp_path / "log.db", 2_000)
    result = invoke("prune", log)
    assert result.exit_code == 0, result.output
    assert "Deleted" in result.output and "size budget mb" in result.output
    assert count(log) == 2_000


@pytest.mark.parametrize("args, message", [
    (["--keep-days", "soon"], "Error: --keep-days 'soon': expected a positive number of days, for example 30"),
    (["--keep-rows", "1.5"], "Error: --keep-rows '1.5': expected a whole number of at least 1, for example 1000000"),
    (["--max-size-mb", "-5"], "Error: --max-size-mb '-5': expected a positive number of megabytes"),
])
def test_prune_bad_options_are_one_line(tmp_path, args, message):
    log = build_log(tmp_path / "log.db", 10)
    result = CliRunner().invoke(cli, ["prune", log, *args])
    assert result.exit_code == 1 and result.output.startswith(message) and result.output.count("\n") == 1, result.output


@pytest.mark.parametrize("command", ["prune", "vacuum"])
def test_commands_refuse_what_is_not_a_log_in_one_line(tmp_path, command):
    (tmp_path / "notes.db").write_bytes(b"")
    sqlite3.connect(tmp_path / "other.db").execute("create table t (x)").connection.close()
    for target, message in ((tmp_path / "missing.db", "no such file"), (tmp_path / "other.db", "not a request log")):
        done = subprocess.run([str(BIN / "asgi-log-to-sqlite"), command, str(target)], capture_output=True,
                              text=True, env=subprocess_env())
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_prune_csv_is_one_value_per_line(tmp_path):
    log = build_log(tmp_path / "log.db", 1_000)
    result = invoke("prune", log, "--keep-rows", 10, "--csv")
    lines = result.output.splitlines()
    assert lines[0] == "section,key,metric,value" and "deleted,,rows,990" in lines
