"""merge and rotate: several logs into one, one log into dated files; nothing counted twice, every file a whole log."""
import calendar
import collections
import contextlib
import os
import shutil
import sqlite3
import threading
import time

import pytest
from click.testing import CliRunner

from asgi_log_to_sqlite import SCHEMA_VERSION, AsgiLogToSqlite, create_file, rollups
from asgi_log_to_sqlite.cli import cli
from asgi_log_to_sqlite.merging import MergeError, merge_files
from asgi_log_to_sqlite.rotating import rotate_file
from asgi_log_to_sqlite.rotation import DatedPath
from conftest import DATASETTE_MAJOR, ROOT, checked, ok, rows, run, serve

MONTHLY = "requests-%Y-%m.db"


def utc_ms(*fields):
    return calendar.timegm(fields + (0,) * (6 - len(fields))) * 1000


def scope(path, agent, forwarded=None):
    """A GET scope; ``forwarded`` is an X-Forwarded-For the proxy at 127.0.0.1 adds."""
    headers = [(b"host", b"testserver"), (b"user-agent", agent.encode())]
    if forwarded:
        headers.append((b"x-forwarded-for", forwarded.encode()))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": None, "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}


async def log(file, requests, monkeypatch, at_ms=None):
    """Serve ``requests`` [(path, agent, forwarded)] through a real logger on ``file``, and write them.

    ``at_ms``: the requests happen at that time (UTC ms): the clock is moved, the code is not.
    """
    app = AsgiLogToSqlite(ok, str(file), trusted_proxies=["127.0.0.1"], exclude=["/skip*"],
                          log_excluded_failures=False)
    with monkeypatch.context() as patch:
        if at_ms is not None:
            real, shift = time.time, at_ms / 1000 - time.time()
            patch.setattr(time, "time", lambda: real() + shift)
        await serve(app, [scope(*request) for request in requests])
        assert app.writer.flush()


def readable(path):
    """readable_requests rows without their id (a merge numbers rows its own way), as a multiset."""
    return collections.Counter(tuple(sorted((k, v) for k, v in row.items() if k != "id")) for row in rows(path))


def union(*paths):
    found = collections.Counter()
    for path in paths:
        found += readable(path)
    return found


def rollup_totals(*paths):
    """Hits and bytes per (hour, route, path, method, status, bot), summed over the files; daily hits too."""
    totals = collections.Counter()
    for path in paths:
        for row in rows(path, "select * from rollup_hourly_readable"):
            key = (row["hour"], row["route"], row["path"], row["method"], row["status"], row["is_bot"])
            totals[key + ("hits",)] += row["hits"]
            totals[key + ("bytes",)] += row["bytes"]
        for row in rows(path, "select day, path, sum(hits) as hits from rollup_daily_readable group by day, path"):
            totals[(row["day"], row["path"], "daily hits")] += row["hits"]
    return totals


def visitors(*paths):
    return set().union(*(set(map(tuple, rows_of(path, "select day, is_bot, visitor from rollup_visitors_daily")))
                         for path in paths))


def counters(*paths):
    found = collections.Counter()
    for path in paths:
        for reason, count in rows_of(path, "select reason, count from log_counters"):
            found[reason] += count
    return found


def rows_of(path, sql):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def sound(path):
    """``path`` passes SQLite's integrity and foreign key checks."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        checked(conn)


def a_requests(n, prefix="/a"):
    return [(f"{prefix}/{i % 7}", f"agent-{i % 3}", f"203.0.113.{i % 4}") for i in range(n)] + [("/skip/a", "x", None)]


def b_requests(n):
    # Shared paths and agents first seen in another order, so the same value has another id in each file.
    return [(f"/a/{6 - i % 7}" if i % 2 else f"/b/{i % 5}", f"agent-{3 - i % 4}", None) for i in range(n)] + [
        ("/skip/b", "x", None), ("/skip/b", "x", None)]


@pytest.fixture
def two_logs(tmp_path, monkeypatch):
    async def make():
        await log(tmp_path / "a.db", a_requests(60), monkeypatch)
        await log(tmp_path / "b.db", b_requests(40), monkeypatch)
        return tmp_path / "a.db", tmp_path / "b.db"
    return make


# ---- merge -------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_merging_two_logs_gives_their_union_row_for_row(tmp_path, two_logs):
    a, b = await two_logs()
    assert rows_of(a, "select name from paths where id = 1") != rows_of(b, "select name from paths where id = 1")
    summary = merge_files(str(tmp_path / "all.db"), [str(a), str(b)])
    assert [(s["rows"], s["first_merge"]) for s in summary] == [(60, True), (40, True)]
    merged = str(tmp_path / "all.db")
    sound(merged)
    assert readable(merged) == union(a, b)
    assert any(dict(row)["forwarded_ip"] for row in readable(merged))   # forwarded_ip_id is remapped too
    # Each value once in the merged lookups, whatever id it had in each file.
    assert rows_of(merged, "select count(*), count(distinct name) from paths")[0] == (12, 12)
    assert rollup_totals(merged) == rollup_totals(a, b)
    assert visitors(merged) == visitors(a, b) and visitors(merged)
    assert counters(merged) == counters(a, b) == {"excluded": 3}


@pytest.mark.asyncio
async def test_merging_twice_adds_nothing_twice(tmp_path, two_logs):
    a, b = await two_logs()
    merged = str(tmp_path / "all.db")
    merge_files(merged, [str(a), str(b)])
    again = merge_files(merged, [str(a), str(b), str(a)])
    assert [(s["rows"], s["counters"], s["rollup_rows"], s["first_merge"]) for s in again] == [(0, 0, 0, False)] * 3
    assert readable(merged) == union(a, b)
    assert rollup_totals(merged) == rollup_totals(a, b)
    assert counters(merged) == counters(a, b)


@pytest.mark.asyncio
async def test_a_source_that_grew_adds_only_its_new_rows(tmp_path, two_logs, monkeypatch):
    a, b = await two_logs()
    merged = str(tmp_path / "all.db")
    merge_files(merged, [str(a)])
    await log(a, a_requests(25, prefix="/later") + [("/skip/again", "x", None)], monkeypatch)
    await log(b, [("/b/new", "agent-new", None)], monkeypatch)
    summary = merge_files(merged, [str(b), str(a)], chunk_rows=7)
    assert [(s["rows"], s["first_merge"]) for s in summary] == [(41, True), (25, False)]
    sound(merged)
    assert readable(merged) == union(a, b)
    assert rollup_totals(merged) == rollup_totals(a, b)
    assert visitors(merged) == visitors(a, b)
    assert counters(merged) == counters(a, b) == {"excluded": 5}


@pytest.mark.asyncio
async def test_visitors_are_the_union_of_the_sources_sets_when_the_destination_has_its_own_salt(
        tmp_path, two_logs, monkeypatch):
    a, _ = await two_logs()
    merged = tmp_path / "live.db"
    await log(merged, [("/own", "own-agent", None)], monkeypatch)     # today's salt of its own
    own = visitors(merged)
    merge_files(str(merged), [str(a)])
    await log(a, a_requests(30, prefix="/again"), monkeypatch)        # the same visitors come back to a
    merge_files(str(merged), [str(a)])
    assert rows_of(merged, "select salt from rollup_salts") != rows_of(a, "select salt from rollup_salts")
    assert visitors(merged) == own | visitors(a)
    assert rows_of(merged, "select sum(hits) from rollup_hourly") == [(1 + 60 + 30,)]


@pytest.mark.asyncio
async def test_a_sources_rows_its_rollups_do_not_count_yet_are_summed_once(tmp_path, two_logs):
    """Rows above a source's rollups' watermark (a writer killed before it added its sums) are copied
    and summed in the destination; the rest are counted by the source's rollups, merged whole."""
    a, b = await two_logs()
    with contextlib.closing(sqlite3.connect(a)) as conn:
        conn.execute("INSERT INTO request_log (start_ms, http_status, body_size, duration_us, path_id, method_id) "
                     "SELECT start_ms, 404, 7, duration_us, path_id, method_id FROM request_log WHERE id <= 10")
        conn.commit()
        assert rollups.WATERMARK.behind(conn) == 10
    merged = str(tmp_path / "all.db")
    merge_files(merged, [str(a), str(b)])
    with contextlib.closing(sqlite3.connect(a, isolation_level=None)) as conn:
        assert rollups.WATERMARK.catch_up(conn)  # now the source's own rollups count them too
    assert rollup_totals(merged) == rollup_totals(a, b)
    assert rows_of(merged, "select sum(hits) from rollup_hourly") == [(70 + 40,)]
    merge_files(merged, [str(a), str(b)])
    assert rollup_totals(merged) == rollup_totals(a, b)


@pytest.mark.asyncio
async def test_rollups_keep_counting_rows_a_source_pruned(tmp_path, two_logs):
    a, b = await two_logs()
    with contextlib.closing(sqlite3.connect(a)) as conn, conn:
        conn.execute("delete from request_log where id <= 20")   # pruned: its rollups still count those rows
    merged = str(tmp_path / "all.db")
    merge_files(merged, [str(a), str(b)])
    assert sum(readable(merged).values()) == 80
    assert rollup_totals(merged) == rollup_totals(a, b)
    assert rows_of(merged, "select sum(hits) from rollup_hourly") == [(100,)]


@pytest.mark.asyncio
async def test_any_order_and_repetition_gives_the_same_totals(tmp_path, two_logs, monkeypatch):
    a, b = await two_logs()
    one, two = str(tmp_path / "one.db"), str(tmp_path / "two.db")
    merge_files(one, [str(a)])
    merge_files(one, [str(b), str(a)])
    await log(b, b_requests(9), monkeypatch)
    merge_files(one, [str(a), str(b)])
    merge_files(two, [str(b), str(a)])
    for merged in (one, two):
        assert readable(merged) == union(a, b)
        assert rollup_totals(merged) == rollup_totals(a, b)
        assert counters(merged) == counters(a, b)


@pytest.mark.asyncio
async def test_rows_cannot_come_twice_by_two_routes(tmp_path, two_logs):
    a, b = await two_logs()
    c = str(tmp_path / "c.db")
    merge_files(str(b), [str(a)])                      # b now holds a's rows
    merge_files(c, [str(a)])
    with pytest.raises(MergeError, match=r"b\.db: holds rows of .*a\.db \(file_id \w+\) that .*c\.db already has "
                                         r"from .*a\.db; merging would count them twice"):
        merge_files(c, [str(b)])
    with pytest.raises(MergeError, match="merging them back would count them twice"):
        merge_files(str(a), [str(b)])
    copy = tmp_path / "copy-of-a.db"
    with contextlib.closing(sqlite3.connect(a)) as original, contextlib.closing(sqlite3.connect(copy)) as duplicate:
        original.backup(duplicate)
    with pytest.raises(MergeError, match="is the destination's own log"):
        merge_files(str(a), [str(copy)])
    # Through b, once, is fine: d records that a's rows came with b, and a given alone later adds nothing new.
    d = str(tmp_path / "d.db")
    merge_files(d, [str(b)])
    with pytest.raises(MergeError, match=r"a\.db: holds rows of its own that .*d\.db already has through .*b\.db;"):
        merge_files(d, [str(a)])
    assert readable(d) == readable(b)


@pytest.mark.asyncio
async def test_a_0_1_1_table_is_copied_with_its_ids_remapped(tmp_path, two_logs):
    a, _ = await two_logs()
    old = tmp_path / "old.db"
    shutil.copyfile(ROOT / "tests" / "fixtures" / "log-0.1.1.db", old)
    create_file(str(old))
    merged = str(tmp_path / "all.db")
    summary = merge_files(merged, [str(a), str(old)])
    assert summary[1]["legacy_rows"] == 21
    merge_files(merged, [str(old)])
    sound(merged)
    legacy = "select start, method, p.name, q.name, u.name, http_status, client_ip, duration from requests_0_1 r " \
             "left join paths p on p.id = r.path left join query_strings q on q.id = r.query_string " \
             "left join user_agents u on u.id = r.user_agent order by start"
    assert rows_of(merged, legacy) == rows_of(old, legacy)
    assert rows_of(merged, "select count(*) from requests") == [(21 + 60,)]
    # Rotated, the 0.1.1 rows go to the files of their start times too, with the view that reads them.
    pattern = str(tmp_path / "r" / "%Y-%m.db")
    rotate_file(merged, pattern)
    files = DatedPath(pattern).existing()
    with_legacy = [f for f in files if rows_of(f, "select 1 from sqlite_master where name = 'requests_0_1'")]
    legacy_month = DatedPath(pattern).path_for(rows_of(old, "select min(start) * 1000 from requests_0_1")[0][0])
    assert with_legacy == [legacy_month]          # only the file of the 0.1.1 rows' month has the table
    assert sorted(row for f in with_legacy for row in rows_of(f, legacy)) == rows_of(old, legacy)
    as_0_1 = "select start, method, http_status, client_ip from requests order by start"
    assert sorted(row for f in files for row in rows_of(f, as_0_1)) == rows_of(merged, as_0_1)


@pytest.mark.asyncio
async def test_merging_beside_a_live_logger_loses_no_row_on_either_side(tmp_path, two_logs, monkeypatch):
    a, b = await two_logs()
    merged = tmp_path / "all.db"
    live = AsgiLogToSqlite(ok, str(merged))
    await serve(live, [scope(f"/live/{i}", "live") for i in range(50)])
    merge_files(str(merged), [str(a), str(b)], chunk_rows=5)   # chunk after chunk while the writer holds its batch
    await serve(live, [scope(f"/live/{i}", "live") for i in range(50, 100)])
    assert live.close()
    assert rows_of(merged, "select count(*) from request_log r join paths p on p.id = r.path_id "
                           "where p.name like '/live/%'") == [(100,)]
    assert sum(readable(merged).values()) == 200
    sound(merged)


@pytest.mark.asyncio
async def test_two_merges_of_the_same_sources_at_once_add_each_row_once(tmp_path, two_logs):
    a, b = await two_logs()
    merged = str(tmp_path / "all.db")
    create_file(merged)
    errors = []

    def merge():
        try:
            # A pause after each chunk, so that the two runs take turns chunk by chunk.
            merge_files(merged, [str(a), str(b)], lambda rows, total: time.sleep(0.005), chunk_rows=3)
        except Exception as error:   # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=merge) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert readable(merged) == union(a, b)
    assert rollup_totals(merged) == rollup_totals(a, b)
    assert counters(merged) == counters(a, b)


# ---- rotate ------------------------------------------------------------------------------------

MONTHS = [utc_ms(2024, 1, 31, 23, 59, 58), utc_ms(2024, 2, 14, 12), utc_ms(2024, 3, 1)]


@pytest.fixture
def three_months(tmp_path, monkeypatch):
    async def make():
        source = tmp_path / "requests.db"
        for number, at_ms in enumerate(MONTHS):
            await log(source, [(f"/m{number}/{i % 4}", f"agent-{number}", None) for i in range(20 + number)] +
                      [("/skip", "x", None)] * (number == 0), monkeypatch, at_ms=at_ms)
        return source
    return make


@pytest.mark.asyncio
async def test_rotate_splits_a_log_into_one_whole_log_per_month(tmp_path, three_months):
    source = await three_months()
    before = readable(source)
    pattern = str(tmp_path / "logs" / MONTHLY)
    summary = rotate_file(str(source), pattern)
    files = DatedPath(pattern).existing()
    assert [os.path.basename(f) for f in files] == ["requests-2024-01.db", "requests-2024-02.db", "requests-2024-03.db"]
    assert [(s["file"], s["rows"]) for s in summary] == list(zip(files, [20, 21, 22]))
    assert union(*files) == before and readable(source) == before      # the source is left as it was
    for number, path in enumerate(files):
        sound(path)
        assert rows_of(path, "pragma user_version") == [(SCHEMA_VERSION,)]
        first, last = DatedPath(pattern).bounds(MONTHS[number])
        assert rows_of(path, f"select count(*) from request_log where start_ms < {first} or start_ms >= {last}") == [(0,)]
        # Its own lookups: only the values its rows use.
        assert {name for (name,) in rows_of(path, "select name from paths")} == {f"/m{number}/{i}" for i in range(4)}
        assert rows_of(path, "select name from user_agents") == [(f"agent-{number}",)]
    assert rollup_totals(*files) == rollup_totals(source)
    assert counters(files[0]) == counters(source) == {"excluded": 1}
    again = rotate_file(str(source), pattern)
    assert [s["rows"] for s in again] == [0, 0, 0] and union(*files) == before
    assert rollup_totals(*files) == rollup_totals(source) and counters(*files) == counters(source)


@pytest.mark.asyncio
async def test_rotate_adds_to_a_file_a_live_writer_already_made_and_can_remove_the_source(tmp_path, three_months,
                                                                                        monkeypatch):
    source = await three_months()
    before = readable(source)
    pattern = str(tmp_path / MONTHLY)
    march = DatedPath(pattern).path_for(MONTHS[2])
    await log(march, [("/m2/live", "live", None)], monkeypatch, at_ms=MONTHS[2] + 5000)
    live = readable(march)
    rotate_file(str(source), pattern, remove_source=True)
    assert not source.exists() and not os.path.exists(str(source) + "-wal")
    assert union(*DatedPath(pattern).existing()) == before + live


@pytest.mark.asyncio
async def test_rotate_keeps_the_source_when_a_row_arrived_in_a_month_already_copied(tmp_path, three_months):
    source = await three_months()
    pattern = str(tmp_path / MONTHLY)

    def a_live_writer_adds_a_january_row(rows, total):
        # While March is copied, a row lands in January, whose file is done: the source must stay.
        if not late:
            with contextlib.closing(sqlite3.connect(source)) as conn, conn:
                conn.execute("insert into request_log (start_ms, flags, sample_rate) values (?, 0, 1.0)", (MONTHS[0] + 1,))
            late.append(rows)

    late = []
    with pytest.raises(MergeError, match="kept: 1 of its rows are not in the dated files yet"):
        rotate_file(str(source), pattern, a_live_writer_adds_a_january_row, remove_source=True, chunk_rows=15)
    assert source.exists()
    rotate_file(str(source), pattern, remove_source=True)
    assert not source.exists()
    assert sum(sum(readable(path).values()) for path in DatedPath(pattern).existing()) == 64


@pytest.mark.asyncio
async def test_rotate_of_an_hourly_pattern_puts_each_daily_rollup_in_one_file(tmp_path, three_months):
    source = await three_months()
    pattern = str(tmp_path / "h" / "%Y" / "%m-%d-%H.db")
    rotate_file(str(source), pattern)
    files = DatedPath(pattern).existing()
    # A day's rollup row cannot be split by hour: it goes to the file of the day's first hour.
    assert [f[-12:] for f in files] == ["/01-31-00.db", "/01-31-23.db", "/02-14-00.db", "/02-14-12.db", "/03-01-00.db"]
    assert [rows_of(f, "select count(*) from request_log")[0][0] > 0 for f in files] == [False, True, False, True, True]
    assert [rows_of(f, "select count(*) from rollup_daily")[0][0] > 0 for f in files] == [True, False, True, False, True]
    assert union(*files) == readable(source)
    assert rollup_totals(*files) == rollup_totals(source)


@pytest.mark.asyncio
async def test_datasette_opens_the_dated_files_side_by_side(tmp_path, three_months):
    from datasette.app import Datasette

    source = await three_months()
    pattern = str(tmp_path / MONTHLY)
    rotate_file(str(source), pattern)
    files = DatedPath(pattern).existing()
    ds = Datasette(files, crossdb=True)
    if hasattr(ds, "invoke_startup"):
        await ds.invoke_startup()
    listed = (await ds.client.get("/-/databases.json")).json()
    listed = listed["databases"] if isinstance(listed, dict) else listed   # 1.0 wraps the list, 0.65 does not
    names = [os.path.basename(f)[:-3] for f in files]
    assert sorted(d["name"] for d in listed if d["name"] in names) == names
    for number, name in enumerate(names):
        response = await ds.client.get(f"/{name}/readable_requests.json?_shape=array&_size=max")
        assert response.status_code == 200, response.text
        assert {row["path"] for row in response.json()} == {f"/m{number}/{i}" for i in range(4)}
    # --crossdb: one query over the three months, each file attached under its name.
    sql = " union all ".join(f"select '{name}' as file, count(*) as n from [{name}].request_log" for name in names)
    query = "/_memory/-/query.json" if DATASETTE_MAJOR >= 1 else "/_memory.json"
    response = await ds.client.get(query, params={"sql": sql, "_shape": "array"})
    assert response.status_code == 200, response.text
    assert [(row["file"], row["n"]) for row in response.json()] == list(zip(names, [20, 21, 22]))


# ---- the command line ----------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_the_merge_and_rotate_commands(tmp_path, two_logs):
    a, b = await two_logs()
    runner = CliRunner()
    merged = str(tmp_path / "all.db")
    done = runner.invoke(cli, ["merge", merged, str(a), str(b)])
    assert done.exit_code == 0, done.output
    assert done.output.splitlines()[0].split() == ["source", "rows", "legacy_rows", "rollup_rows", "counters",
                                                   "first_merge"]
    assert done.output.splitlines()[2].split()[1:2] == ["60"]
    done = runner.invoke(cli, ["merge", merged, str(a), "--json"])
    assert done.exit_code == 0 and '"rows": 0' in done.output and '"first_merge": false' in done.output
    done = runner.invoke(cli, ["rotate", merged, str(tmp_path / "r-%Y-%m.db"), "--csv"])
    assert done.exit_code == 0 and done.output.startswith("file,first,rows,")
    assert union(*DatedPath(str(tmp_path / "r-%Y-%m.db")).existing()) == readable(merged)


@pytest.mark.parametrize("arguments, message", [
    (["merge", "all.db", "missing.db"], "missing.db: no such file"),
    (["merge", "all.db", "notes.txt"], "notes.txt: not a SQLite database"),
    (["merge", "all.db", "other.db"], "other.db: not a request log (it has no request_log table)"),
    (["merge", "a.db", "a.db"], "a.db: is the destination itself"),
    (["merge", "logs/%Y-%m.db", "a.db"], "a dated pattern; merge into one file"),
    (["rotate", "a.db", "logs/requests.db"], "'logs/requests.db': no date directive"),
    (["rotate", "a.db", "logs/{hostname}.db"], "{hostname} alone names one file"),
    (["rotate", "a.db", "logs/%Y-%q.db"], "unsupported directive(s) %q"),
    (["rotate", "a.db", "logs/%Y-%d.db"], "without %m"),
])
def test_user_errors_are_one_line_and_exit_1(tmp_path, arguments, message):
    create_file(str(tmp_path / "a.db"))
    (tmp_path / "notes.txt").write_text("not a database\n")
    with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as conn:
        conn.execute("create table t (x)")
    done = run("asgi-log-to-sqlite", *arguments, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr and "Traceback" not in done.stderr
