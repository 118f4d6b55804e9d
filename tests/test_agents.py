"""User-agent classes: found once, when a user_agents row is created, and kept in that row.

Logs are written by the real middleware from real requests (httpx.ASGITransport, or scopes driven
as a server builds them); the command runs through click's CliRunner and, where a second process
matters, a real subprocess.
"""
import json
import shutil
import sqlite3
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner

import asgi_log_to_sqlite
from asgi_log_to_sqlite import AsgiLogToSqlite, agents
from asgi_log_to_sqlite.cli import cli
from asgi_log_to_sqlite.lookups import BUCKET
from asgi_log_to_sqlite.record import FLAG_TRUNCATED

from conftest import TESTS, ok, rows, run, scope_for, serve, subprocess_env

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
FIREFOX_ANDROID = "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0"
IPAD = ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
        "Mobile/15E148 Safari/604.1")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CURL = "curl/8.5.0"
REQUESTS = "python-requests/2.31.0"
EXPECTED = {
    CHROME: ("Chrome", "Windows", "desktop", 0),
    FIREFOX_ANDROID: ("Firefox Mobile", "Android", "mobile", 0),
    IPAD: ("Mobile Safari", "iOS", "tablet", 0),
    GOOGLEBOT: ("Googlebot", "Other", "bot", 1),
    CURL: ("curl", "Other", "bot", 1),
    REQUESTS: ("Python Requests", "Other", "bot", 1),
}


def classes_of(path):
    """{agent text: (browser, os, device, is_bot)} of a log's user_agents rows."""
    conn = sqlite3.connect(path)
    try:
        return {name: tuple(rest) for name, *rest in conn.execute("SELECT name, browser, os, device, is_bot FROM user_agents")}
    finally:
        conn.close()


def execute(path, sql, params=()):
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


async def get_with_agents(app, agent_list, path="/"):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        for agent in agent_list:
            response = await client.get(path, headers={"user-agent": agent})
            assert response.status_code == 200


def command(*args):
    """The CLI through CliRunner: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.asyncio
async def test_each_real_agent_gets_its_classes_when_its_row_is_created(tmp_path):
    path = tmp_path / "log.db"
    app = AsgiLogToSqlite(ok, str(path))
    await get_with_agents(app, list(EXPECTED))
    assert app.flush()
    assert classes_of(path) == EXPECTED
    assert len(rows(path)) == len(EXPECTED)


@pytest.mark.asyncio
async def test_bot_flags_reach_the_rollups_of_the_same_batch(tmp_path):
    path = tmp_path / "log.db"
    app = AsgiLogToSqlite(ok, str(path))
    # One batch: every agent is new when the rollups of its rows are computed.
    await get_with_agents(app, [GOOGLEBOT, CURL, CHROME, IPAD, CHROME])
    assert app.flush()
    conn = sqlite3.connect(path)
    try:
        by_flag = dict(conn.execute("SELECT is_bot, sum(hits) FROM rollup_hourly GROUP BY is_bot"))
    finally:
        conn.close()
    assert by_flag == {1: 2, 0: 3}


@pytest.mark.asyncio
async def test_odd_empty_missing_and_overlong_agents_do_not_break_logging(tmp_path):
    path = tmp_path / "log.db"
    app = AsgiLogToSqlite(ok, str(path))
    odd = b"Mozilla/5.0 (X11; Linux x86_64) \xff\xfe\x00 Firefox/125.0"
    long_agent = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) " + b"AppleWebKit/537.36 " * 100
    missing = scope_for("/missing")
    missing["headers"] = [(name, value) for name, value in missing["headers"] if name != b"user-agent"]
    scopes = [scope_for("/odd", agent=odd), scope_for("/empty", agent=b""), missing,
              scope_for("/long", agent=long_agent)]
    assert await serve(app, scopes) == [200] * 4
    assert app.flush()
    logged = {row["path"]: row for row in rows(path)}
    assert set(logged) == {"/odd", "/empty", "/missing", "/long"}
    assert logged["/missing"]["user_agent"] is None
    assert logged["/long"]["flags"] & FLAG_TRUNCATED
    found = classes_of(path)
    assert len(found) == 3
    stored_odd = next(name for name in found if name.startswith("Mozilla/5.0 (X11"))
    assert "\\xff\\xfe" in stored_odd
    assert found[stored_odd] == ("Firefox", "Linux", "desktop", 0)
    assert found[""] == ("Other", "Other", "bot", 1)
    stored_long = next(name for name in found if name.startswith("Mozilla/5.0 (Windows"))
    assert len(stored_long) == 1000
    assert found[stored_long][3] == 0 and found[stored_long][1] == "Windows"


@pytest.mark.asyncio
async def test_a_repeated_agent_is_classified_once_even_by_another_process(tmp_path):
    path = tmp_path / "log.db"
    app = AsgiLogToSqlite(ok, str(path))
    await get_with_agents(app, [CHROME] * 5)
    assert app.flush()
    assert app.writer.lookups.classifier.parsed == 1
    # A correction a parser would never make: were the agent classified again, it would be undone.
    execute(path, "UPDATE user_agents SET device = 'bot', is_bot = 1 WHERE name = ?", (CHROME,))
    await get_with_agents(app, [CHROME] * 5)
    assert app.flush()
    assert app.writer.lookups.classifier.parsed == 1
    script = (
        "import asyncio, sys\n"
        "from asgi_log_to_sqlite import AsgiLogToSqlite\n"
        "from conftest import ok, scope_for, serve\n"
        "app = AsgiLogToSqlite(ok, sys.argv[1])\n"
        "asyncio.run(serve(app, [scope_for('/other-process', agent=sys.argv[2].encode())] * 3))\n"
        "assert app.close()\n"
        "print(app.writer.lookups.classifier.parsed)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path), CHROME], capture_output=True, text=True,
                          env=subprocess_env(), cwd=TESTS, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
    assert classes_of(path)[CHROME] == ("Chrome", "Windows", "bot", 1)
    assert len(rows(path)) == 13


@pytest.mark.asyncio
async def test_past_the_parsing_budget_new_agents_get_their_bot_flag_and_the_command_completes_them(tmp_path):
    path = tmp_path / "log.db"
    agents.prepare()  # built beforehand, so that the six agents fall well within one second's budget
    app = AsgiLogToSqlite(ok, str(path))
    app.writer.lookups.classifier = agents.Classifier(per_second=2)
    flood = [CHROME, IPAD, FIREFOX_ANDROID, GOOGLEBOT, CURL, "Mozilla/5.0 (compatible; ExampleScanner/1.0)"]
    await get_with_agents(app, flood)
    assert app.flush()
    found = classes_of(path)
    assert [found[a][3] for a in flood] == [0, 0, 0, 1, 1, 1], "every row has its bot flag at creation"
    assert found[CHROME] == EXPECTED[CHROME] and found[IPAD] == EXPECTED[IPAD]
    assert found[FIREFOX_ANDROID] == (None, None, None, 0)
    assert found[CURL] == (None, None, "bot", 1)
    code, out, err = command("agents", path, "--reclassify", "--json")
    assert code == 0, err
    assert "ran the parser over 4 agent(s); 4 changed" in err
    assert "bot flag(s) changed" not in err
    found = classes_of(path)
    for agent in (FIREFOX_ANDROID, GOOGLEBOT, CURL):
        assert found[agent] == EXPECTED[agent]


@pytest.mark.asyncio
async def test_agents_past_max_distinct_values_are_not_parsed(tmp_path):
    path = tmp_path / "log.db"
    app = AsgiLogToSqlite(ok, str(path), max_distinct_values=3)
    await get_with_agents(app, [CHROME, IPAD, CURL] + [f"scanner-{n}/1.0" for n in range(20)])
    assert app.flush()
    found = classes_of(path)
    assert set(found) == {CHROME, IPAD, CURL, BUCKET}
    assert found[BUCKET] == agents.BUCKET_CLASSES
    assert app.writer.lookups.classifier.parsed == 4  # three agents and the "(other)" row, once


@pytest.mark.asyncio
async def test_the_command_shows_classes_with_hits(tmp_path):
    path = tmp_path / "log.db"
    app = AsgiLogToSqlite(ok, str(path))
    await get_with_agents(app, [CHROME] * 3 + [IPAD] + [GOOGLEBOT] * 2 + [CURL])
    assert await serve(app, [{**scope_for("/no-agent"), "headers": [(b"host", b"testserver")]}]) == [200]
    assert app.close()
    code, out, err = command("agents", path, "--json")
    assert code == 0 and err == ""
    assert json.loads(out) == [
        {"device": "desktop", "bot": False, "browser": "Chrome", "os": "Windows", "agents": 1, "hits": 3},
        {"device": "bot", "bot": True, "browser": "Googlebot", "os": "Other", "agents": 1, "hits": 2},
        {"device": "(no agent)", "bot": None, "browser": "(no agent)", "os": "(no agent)", "agents": 0, "hits": 1},
        {"device": "bot", "bot": True, "browser": "curl", "os": "Other", "agents": 1, "hits": 1},
        {"device": "tablet", "bot": False, "browser": "Mobile Safari", "os": "iOS", "agents": 1, "hits": 1},
    ]
    code, out, _ = command("agents", path, "--by", "bot", "--csv")
    assert out.splitlines() == ["bot,agents,hits", "no,2,4", "yes,2,3", ",0,1"]
    code, out, _ = command("agents", path, "--by", "device", "--limit", "1")
    assert out.splitlines()[2].split() == ["bot", "2", "3"] and len(out.splitlines()) == 3


def test_agents_recorded_before_version_2_are_classified_by_the_command(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(TESTS / "fixtures" / "log-0.1.1.db", path)
    asgi_log_to_sqlite.create_file(str(path))  # the upgrade the logger makes at its first request
    assert set(classes_of(path).values()) == {(None, None, None, None)}
    code, out, err = command("agents", path, "--by", "bot")
    assert code == 0
    assert out.splitlines()[2].split() == ["4", "21"]
    assert "4 agent(s) have no classes yet" in err
    code, out, err = command("agents", path, "--reclassify", "--by", "bot", "--json")
    assert code == 0, err
    assert "ran the parser over 4 agent(s); 4 changed" in err
    assert "rollup" in err  # flags were set: the rollups of the old rows follow after a rebuild
    assert json.loads(out) == [{"bot": True, "agents": 4, "hits": 21}]
    assert classes_of(path)["python-httpx/0.28.1"] == ("Other", "Other", "bot", 1)
    code, out, err = command("agents", path, "--reclassify")
    assert "ran the parser over 0 agent(s)" in err


@pytest.mark.asyncio
async def test_an_old_agent_is_classified_when_the_logger_meets_it_again(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(TESTS / "fixtures" / "log-0.1.1.db", path)
    app = AsgiLogToSqlite(ok, str(path))
    await get_with_agents(app, ["python-httpx/0.28.1"])
    assert app.flush()
    found = classes_of(path)
    assert found["python-httpx/0.28.1"] == ("Other", "Other", "bot", 1)
    assert found["agent-0"] == (None, None, None, None)


@pytest.mark.asyncio
async def test_a_corrected_row_survives_reclassify_unless_all(tmp_path):
    path = tmp_path / "log.db"
    app = AsgiLogToSqlite(ok, str(path))
    await get_with_agents(app, [CHROME, CURL])
    assert app.close()
    execute(path, "UPDATE user_agents SET device = 'bot', is_bot = 1 WHERE name = ?", (CHROME,))
    execute(path, "UPDATE user_agents SET browser = NULL, os = NULL, device = NULL, is_bot = NULL WHERE name = ?", (CURL,))
    code, _, err = command("agents", path, "--reclassify")
    assert code == 0, err
    assert "ran the parser over 1 agent(s); 1 changed" in err
    assert classes_of(path) == {CHROME: ("Chrome", "Windows", "bot", 1), CURL: EXPECTED[CURL]}
    code, _, err = command("agents", path, "--reclassify", "--all")
    assert code == 0, err
    assert "ran the parser over 2 agent(s); 1 changed" in err and "1 bot flag(s) changed" in err
    assert classes_of(path) == {CHROME: EXPECTED[CHROME], CURL: EXPECTED[CURL]}


def test_user_errors_are_one_line(tmp_path):
    code, _, err = command("agents", tmp_path / "nothing.db")
    assert code == 1 and err.strip() == f"Error: {tmp_path / 'nothing.db'}: no such file"
    asgi_log_to_sqlite.create_file(str(tmp_path / "log.db"))
    code, _, err = command("agents", tmp_path / "log.db", "--all")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--all goes with --reclassify" in err


def test_the_command_is_on_the_installed_script(tmp_path):
    asgi_log_to_sqlite.create_file(str(tmp_path / "log.db"))
    done = run("asgi-log-to-sqlite", "agents", tmp_path / "log.db", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_classify_alone():
    assert agents.classify(BUCKET) == agents.Classes(*agents.BUCKET_CLASSES)
    assert agents.classify("   ") == ("Other", "Other", "bot", 1)
    assert agents.classify("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
                           "Chrome/124.0.0.0 Safari/537.36").device == "tablet"
    assert agents.classify("Mozilla/5.0 (Linux; Android 14; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
                           "Chrome/124.0.0.0 Mobile Safari/537.36").is_bot == 0
    assert agents.flag_only(GOOGLEBOT) == (None, None, "bot", 1)
    assert agents.flag_only(CHROME) == (None, None, None, 0)
    assert agents.completed(CHROME, 1) == ("Chrome", "Windows", "bot", 1)
    assert agents.completed(CURL, 0).is_bot == 0 and agents.completed(CURL, 0).device != "bot"
