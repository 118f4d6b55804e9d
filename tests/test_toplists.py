"""The top lists' rollups (toplists.py): summed behind the writer up to a watermark, exact with the raw
tail readers add, and unchanged by pruning, merging, rotating and rebuilding."""
from __future__ import annotations

import asyncio
import glob
import os
import json
import sqlite3
import time

import pytest
from click.testing import CliRunner

from asgi_log_to_sqlite import AsgiLogToSqlite, create_file, toplists
from asgi_log_to_sqlite.cli import cli
from conftest import checked, ok, scope_for, serve

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
LISTS = {
    "paths": ("path_id", "paths", "count(*), coalesce(sum(r.http_status >= 400 AND r.http_status < 500), 0), coalesce(sum(r.http_status >= 500), 0), "
              "coalesce(sum(r.body_size), 0), coalesce(sum(r.duration_us), 0), count(r.duration_us)"),
    "referers": ("referer_id", "referers", "count(*)"),
    "agents": ("user_agent_id", "user_agents", "count(*)"),
}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def build_log(path, rows, *, start_ms, span_ms, paths=30, agents=40, referers=20, seed=0):
    """``rows`` raw rows written by SQL, spread evenly over [start_ms, start_ms + span_ms): the top
    lists do not count them yet (the watermark stays where it was)."""
    create_file(str(path))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table, count, name in (("paths", paths, "'/p/' || i"), ("user_agents", agents, "'Agent/' || i"),
                                   ("referers", referers, "'https://r' || i || '.example/'")):
            conn.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) "
                         f"INSERT INTO {table} (name) SELECT {name} FROM n WHERE true ON CONFLICT DO NOTHING")
        conn.execute(f"""WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rows - 1})
            INSERT INTO request_log (start_ms, duration_us, http_status, body_size, request_size, path_id,
                                     user_agent_id, referer_id)
            SELECT {start_ms} + i * {span_ms // rows}, CASE WHEN i % 11 = 0 THEN NULL ELSE 100 + (i * 7 + {seed}) % 5000 END,
                   CASE (i + {seed}) % 9 WHEN 0 THEN 404 WHEN 1 THEN 503 WHEN 2 THEN NULL ELSE 200 END, (i * 13) % 900, 0,
                   1 + (i * 7 + {seed}) % {paths}, 1 + (i * 3 + {seed}) % {agents},
                   CASE WHEN i % 4 = 0 THEN NULL ELSE 1 + (i + {seed}) % {referers} END FROM n""")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return str(path)


def raw_lists(path):
    """Each list from the raw rows: {list: {(hour, name): values}}, and the same per day."""
    conn = sqlite3.connect(path)
    try:
        found = {}
        for name, (column, lookup, sums) in LISTS.items():
            for unit, size in (("hour", HOUR_MS), ("day", DAY_MS)):
                found[name, unit] = {(row[0], row[1]): row[2:] for row in conn.execute(
                    f"SELECT r.start_ms / {size}, coalesce(l.name, ''), {sums} FROM request_log r "
                    f"LEFT JOIN {lookup} l ON l.id = r.{column} GROUP BY 1, 2")}
        return found
    finally:
        conn.close()


def read_lists(path, tail=True):
    """Each list as a reader sees it: the tables, plus the raw rows above the watermark when ``tail``."""
    conn = sqlite3.connect(path)
    try:
        found = {}
        for name, (column, lookup, sums) in LISTS.items():
            values = toplists.PATH_VALUES if name == "paths" else ("hits",)
            for unit, size, table in (("hour", HOUR_MS, "hourly"), ("day", DAY_MS, "daily")):
                arms = [f"SELECT t.{unit} AS unit, t.{column} AS id, {', '.join('t.' + v for v in values)} "
                        f"FROM rollup_{name}_{table} t"]
                if tail:
                    arms.append(f"SELECT r.start_ms / {size}, coalesce(r.{column}, 0), {sums} FROM request_log r "
                                f"WHERE {toplists.TAIL} GROUP BY 1, 2")
                found[name, unit] = {(row[0], row[1]): row[2:] for row in conn.execute(
                    f"SELECT x.unit, coalesce(l.name, ''), {', '.join(f'sum(x.{v})' for v in values)} "
                    f"FROM ({' UNION ALL '.join(arms)}) x LEFT JOIN {lookup} l ON l.id = x.id GROUP BY 1, 2")}
        return found
    finally:
        conn.close()


def behind(path):
    conn = sqlite3.connect(path)
    try:
        return toplists.behind(conn)
    finally:
        conn.close()


def catch_up(path, **options):
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return toplists.catch_up(conn, **options)
    finally:
        conn.close()


def test_readers_get_exact_lists_whatever_the_watermark(tmp_path):
    log = build_log(tmp_path / "log.db", 5_000, start_ms=1_700_000_000_000, span_ms=3 * DAY_MS)
    expected = raw_lists(log)
    assert behind(log) == 5_000 and read_lists(log) == expected
    conn = sqlite3.connect(log, isolation_level=None)
    try:
        # Slice by slice: every step leaves the tables and the tail adding up to the raw rows.
        for done in range(700, 5_000, 700):
            conn.execute("BEGIN IMMEDIATE")
            assert toplists.catch_up_slice(conn, 700) == 700
            conn.execute("COMMIT")
            assert toplists.behind(conn) == 5_000 - done and read_lists(log) == expected
    finally:
        conn.close()
    assert catch_up(log, rows=700) and behind(log) == 0
    assert read_lists(log, tail=False) == expected


def test_the_writer_moves_the_watermark_on_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(toplists, "CATCH_UP_EVERY_S", 0.0)
    log = str(tmp_path / "log.db")
    app = AsgiLogToSqlite(ok, log)
    scopes = [scope_for(f"/page/{i % 7}", agent=f"Agent/{i % 5}".encode(), referer=f"https://r{i % 3}.example/".encode())
              for i in range(300)]
    assert asyncio.run(serve(app, scopes)) == [200] * 300
    assert app.flush(10)
    deadline = time.monotonic() + 15
    while behind(log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert behind(log) == 0, "the writer did not catch up within 15 s"
    lists = read_lists(log, tail=False)
    assert lists == raw_lists(log)
    assert sum(values[0] for values in lists["paths", "day"].values()) == 300
    assert {name for _, name in lists["agents", "day"]} == {f"Agent/{i}" for i in range(5)}
    assert app.close()


def test_pruning_keeps_the_lists_and_deletes_only_counted_rows(tmp_path):
    log = build_log(tmp_path / "log.db", 10_000, start_ms=1_700_000_000_000, span_ms=5 * DAY_MS)
    expected = raw_lists(log)
    result = invoke("prune", log, "--keep-rows", 1_000, "--json")
    assert result.exit_code == 0, result.output
    assert count(log) == 1_000 and behind(log) == 0
    assert read_lists(log, tail=False) == expected


def test_the_writers_prune_never_takes_rows_the_lists_do_not_count(tmp_path, monkeypatch):
    """keep_rows met by the writer while the lists are far behind: it sums before it deletes."""
    monkeypatch.setattr(toplists, "CATCH_UP_EVERY_S", 3600.0)  # the writer would not catch up for an hour
    log = build_log(tmp_path / "log.db", 10_000, start_ms=int(time.time() * 1000) - DAY_MS, span_ms=DAY_MS // 2)
    expected = raw_lists(log)
    app = AsgiLogToSqlite(ok, log, keep_rows=500)
    assert asyncio.run(serve(app, [scope_for("/late")])) == [200]
    assert app.flush(10)
    deadline = time.monotonic() + 30
    while count(log) > 506 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count(log) <= 506
    assert app.close()
    lists = read_lists(log)
    assert {key: value for key, value in lists["paths", "day"].items() if key[1] != "/late"} == expected["paths", "day"]
    assert lists["agents", "hour"].keys() >= expected["agents", "hour"].keys()


def query(path, sql):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(path, table="request_log"):
    return query(path, f"SELECT count(*) FROM {table}")[0][0]


def added(*lists):
    """The lists of several files added up."""
    total = {}
    for found in lists:
        for key, rows in found.items():
            into = total.setdefault(key, {})
            for name, values in rows.items():
                into[name] = tuple(a + b for a, b in zip(into[name], values)) if name in into else values
    return total


def test_merge_adds_each_sources_lists_once_pruned_rows_and_tails_included(tmp_path):
    a = build_log(tmp_path / "a.db", 6_000, start_ms=1_700_000_000_000, span_ms=4 * DAY_MS)
    b = build_log(tmp_path / "b.db", 4_000, start_ms=1_700_100_000_000, span_ms=3 * DAY_MS, paths=45, seed=5)
    expected = added(raw_lists(a), raw_lists(b))
    assert invoke("prune", a, "--keep-rows", 2_000).exit_code == 0  # a's lists count rows a no longer has
    conn = sqlite3.connect(b, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    toplists.catch_up_slice(conn, 1_500)  # b's watermark in the middle of its rows
    conn.execute("COMMIT")
    conn.close()
    merged = str(tmp_path / "all.db")
    result = invoke("merge", merged, a, b)
    assert result.exit_code == 0, result.output
    assert behind(merged) == 0  # merge leaves the lists caught up
    assert read_lists(merged, tail=False) == expected
    result = invoke("merge", merged, a, b)  # again: nothing is added twice
    assert result.exit_code == 0, result.output
    assert read_lists(merged) == expected
    checked(sqlite3.connect(merged)).close()


def test_merge_leaves_the_lists_caught_up_and_exact_with_a_backlog(tmp_path):
    source = build_log(tmp_path / "source.db", 3_000, start_ms=1_700_000_000_000, span_ms=DAY_MS)
    merged = str(tmp_path / "all.db")
    assert invoke("merge", merged, source).exit_code == 0
    conn = sqlite3.connect(source, isolation_level=None)
    conn.execute("INSERT INTO request_log (start_ms, http_status, path_id) "
                 "SELECT start_ms + 3600000, http_status, path_id FROM request_log")
    conn.close()  # rows the source's rollups do not count: copied as new rows
    # The destination's own backlog: the merge sums it in slices before its chunks.
    conn = sqlite3.connect(merged, isolation_level=None)
    conn.execute("UPDATE log_meta SET value = '0' WHERE key = ?", (toplists.META_KEY,))
    for name, _, _, _ in toplists.LISTS:
        for unit in ("hourly", "daily"):
            conn.execute(f"DELETE FROM rollup_{name}_{unit}")
    conn.close()
    assert invoke("merge", merged, source).exit_code == 0
    assert behind(merged) == 0
    assert read_lists(merged, tail=False) == raw_lists(merged)


def test_rotate_gives_each_dated_file_its_own_lists(tmp_path):
    single = build_log(tmp_path / "one.db", 9_000, start_ms=1_704_067_200_000, span_ms=80 * DAY_MS)  # 2024-01-01 on
    catch_up(single, rows=4_000)
    conn = sqlite3.connect(single, isolation_level=None)
    conn.execute("INSERT INTO request_log (start_ms, http_status, path_id) VALUES (1711000000000, 200, 1)")
    conn.close()  # one row above the watermark
    result = invoke("rotate", single, str(tmp_path / "logs" / "requests-%Y-%m.db"))
    assert result.exit_code == 0, result.output
    files = sorted(glob.glob(str(tmp_path / "logs" / "requests-*.db")))
    assert len(files) == 3
    for file in files:
        assert read_lists(file) == raw_lists(file), file
    assert added(*(read_lists(file) for file in files)) == raw_lists(single)


def test_rotate_keeps_the_periods_only_the_top_lists_still_count(tmp_path):
    # The size budget deletes rollups table by table, oldest first: January may be left only in the
    # top lists' daily tables, and still needs a file of its own.
    single = build_log(tmp_path / "one.db", 6_000, start_ms=1_704_067_200_000, span_ms=60 * DAY_MS)  # Jan and Feb 2024
    assert invoke("rollup", single, "--rebuild").exit_code == 0
    assert invoke("prune", single, "--keep-rows", 1_000).exit_code == 0
    february = 1_706_745_600_000 // DAY_MS
    conn = sqlite3.connect(single, isolation_level=None)
    for table in ("rollup_hourly", "rollup_visitors_hourly") + tuple(t for t in toplists.TABLES if t.endswith("hourly")):
        conn.execute(f"DELETE FROM {table}")
    for table in ("rollup_daily", "rollup_visitors_daily", "rollup_traffic_daily", "rollup_traffic_hourly"):
        conn.execute(f"DELETE FROM {table} WHERE {'hour / 24' if table.endswith('hourly') else 'day'} < ?", (february,))
    total = conn.execute("SELECT sum(hits) FROM rollup_agents_daily").fetchone()[0]
    assert conn.execute("SELECT sum(hits) FROM rollup_agents_daily WHERE day < ?", (february,)).fetchone()[0] > 0
    conn.close()
    result = invoke("rotate", single, str(tmp_path / "logs" / "requests-%Y-%m.db"))
    assert result.exit_code == 0, result.output
    files = sorted(glob.glob(str(tmp_path / "logs" / "requests-*.db")))
    assert [os.path.basename(f) for f in files] == ["requests-2024-01.db", "requests-2024-02.db"]
    assert sum(query(f, "SELECT coalesce(sum(hits), 0) FROM rollup_agents_daily")[0][0] for f in files) == total


def test_rebuild_after_the_hourly_rollups_went_counts_the_last_raw_rows_once(tmp_path):
    # Past the size budget every hourly rollup row goes first while the newest raw row stays: its
    # hour then has raw rows and no hourly counts, and its day's rows still count it.
    log = build_log(tmp_path / "log.db", 3_000, start_ms=1_700_000_000_000, span_ms=2 * DAY_MS)
    assert invoke("rollup", log, "--rebuild").exit_code == 0
    assert invoke("prune", log, "--keep-rows", 1).exit_code == 0
    conn = sqlite3.connect(log, isolation_level=None)
    for table in ("rollup_hourly", "rollup_visitors_hourly") + tuple(t for t in toplists.TABLES if t.endswith("hourly")):
        conn.execute(f"DELETE FROM {table}")
    conn.close()
    daily = "SELECT (SELECT sum(hits) FROM rollup_paths_daily), (SELECT sum(hits) FROM rollup_agents_daily), " \
            "(SELECT sum(hits) FROM rollup_daily), (SELECT sum(hits) FROM rollup_traffic_daily)"
    assert query(log, daily) == [(3_000, 3_000, 3_000, 3_000)]
    result = invoke("rollup", log, "--rebuild")
    assert result.exit_code == 0, result.output
    assert query(log, daily) == [(3_000, 3_000, 3_000, 3_000)]


def test_rebuild_recomputes_the_hours_raw_rows_still_cover(tmp_path):
    log = build_log(tmp_path / "log.db", 8_000, start_ms=1_700_000_000_000, span_ms=4 * DAY_MS)
    before_prune = raw_lists(log)
    assert invoke("prune", log, "--keep-rows", 3_000).exit_code == 0
    conn = sqlite3.connect(log, isolation_level=None)
    # A lookup corrected by hand (two agents are one): rebuild moves the counts of the hours raw rows cover.
    conn.execute("UPDATE request_log SET user_agent_id = 1 WHERE user_agent_id = 2")
    conn.close()
    result = invoke("rollup", log, "--rebuild", "--json")
    assert result.exit_code == 0, result.output
    lists = read_lists(log, tail=False)
    now = raw_lists(log)
    covered = {hour for hour, _ in now["paths", "hour"]}
    first = min(covered)  # the oldest hour with raw rows was pruned in part: it keeps its counts
    assert {k: v for k, v in lists["paths", "hour"].items() if k[0] > first} == \
        {k: v for k, v in now["paths", "hour"].items() if k[0] > first}
    assert {k: v for k, v in lists["agents", "hour"].items() if k[0] > first} == \
        {k: v for k, v in now["agents", "hour"].items() if k[0] > first}
    assert not any(name == "Agent/2" for hour, name in lists["agents", "hour"] if hour > first)
    # The pruned hours keep what they counted, and every day still counts all its requests.
    assert {k: v for k, v in lists["paths", "hour"].items() if k[0] < first} == \
        {k: v for k, v in before_prune["paths", "hour"].items() if k[0] < first}
    assert lists["paths", "day"] == before_prune["paths", "day"]


@pytest.mark.parametrize("rows", [0, 1])
def test_an_empty_or_tiny_log_needs_nothing(tmp_path, rows):
    log = str(tmp_path / "log.db")
    create_file(log)
    if rows:
        build_log(log, rows, start_ms=1_700_000_000_000, span_ms=HOUR_MS, seed=2)  # its row has no status
    assert catch_up(log) and behind(log) == 0
    assert read_lists(log, tail=False) == raw_lists(log)


def test_import_leaves_the_lists_counting_every_imported_line(tmp_path):
    log = str(tmp_path / "log.db")
    access = tmp_path / "access.log"
    access.write_text("".join(
        f'203.0.113.{i % 7} - - [10/Oct/2024:13:{i % 60:02d}:36 +0000] "GET /item/{i % 9} HTTP/1.1" {200 if i % 5 else 404} '
        f'{100 + i} "https://ref{i % 3}.example/" "Agent/{i % 4}"\n' for i in range(500)))
    result = invoke("import", log, access)
    assert result.exit_code == 0, result.output
    assert behind(log) == 0
    lists = read_lists(log, tail=False)
    assert lists == raw_lists(log)
    assert sum(values[0] for values in lists["paths", "day"].values()) == 500


def test_check_says_how_far_behind_the_lists_are(tmp_path):
    log = build_log(tmp_path / "log.db", 120_000, start_ms=1_700_000_000_000, span_ms=DAY_MS)
    result = invoke("check", log, "--json", "--max-size-mb", 1000)
    found = {row["check"]: row for row in json.loads(result.output)}
    assert found["top lists"]["status"] == "warning" and "120,000 rows still to sum" in found["top lists"]["detail"]
    assert invoke("rollup", log, "--rebuild").exit_code == 0
    found = {row["check"]: row for row in json.loads(invoke("check", log, "--json", "--max-size-mb", 1000).output)}
    assert found["top lists"] == {"check": "top lists", "status": "ok", "detail": "every row counted"}
