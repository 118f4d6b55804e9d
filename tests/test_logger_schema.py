"""The log's schema as files get it: the same tables, columns, indexes and views however it was written, set up
in one transaction (a failed upgrade leaves the file as it was), and once when processes race on a fresh file."""
import multiprocessing
import os
import re
import shutil
import sqlite3
import sys

import pytest
import sqlite_utils

from asgi_log_to_sqlite import SCHEMA_VERSION, create_file
from asgi_log_to_sqlite import schema as log_schema
from asgi_log_to_sqlite import toplists
from conftest import TESTS, write_one_request

FIXTURES = TESTS / "fixtures"


def affinity(declared):
    """The affinity SQLite gives a column declared ``declared`` (https://www.sqlite.org/datatype3.html, 3.1)."""
    declared = declared.upper()
    if "INT" in declared:
        return "INTEGER"
    if any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in declared or not declared:
        return "BLOB"
    if any(word in declared for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def shape(db):
    """What a file's schema means, not how its SQL was spelled: per table its columns (affinity for the type:
    sqlite-utils 3.x declares a float column FLOAT where 4.x writes REAL), foreign keys and indexes; per view
    its columns and its SELECT, without quoting and line breaks."""
    def columns(table):
        return [(c.name, affinity(c.type), c.notnull, c.default_value, c.is_pk) for c in table.columns]

    tables = {
        table.name: (columns(table), sorted(table.foreign_keys),
                     sorted((i.name, i.unique, i.origin, i.partial, i.columns) for i in table.indexes))
        for table in db.tables
    }
    views = {view.name: (columns(view), " ".join(re.sub(r'[\[\]"]', "", view.schema).split())) for view in db.views}
    return tables, views


def assert_same_schema(db, sql_path):
    """``db`` has the tables, columns, indexes and views that the SQL in ``sql_path`` creates."""
    expected = sqlite_utils.Database(memory=True)
    expected.conn.executescript(sql_path.read_text())
    for found, wanted in zip(shape(db), shape(expected)):
        for name in sorted(set(found) | set(wanted)):
            assert found.get(name) == wanted.get(name), name


def upgraded_0_1_1(directory):
    path = directory / "old.db"
    shutil.copy(FIXTURES / "log-0.1.1.db", path)
    return path


def made_by_version_1(directory):
    """A file as the previous release left it: version 1's schema (its snapshot) holding one request."""
    path = directory / "v1.db"
    conn = sqlite3.connect(path)
    try:
        conn.executescript((FIXTURES / "schema-v1.sql").read_text() + "\nPRAGMA user_version = 1;")
        conn.execute("INSERT INTO paths (name) VALUES ('/kept')")
        conn.execute("INSERT INTO user_agents (name) VALUES ('Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0')")
        conn.execute("INSERT INTO request_log (start_ms, duration_us, http_status, path_id, user_agent_id, flags, "
                     "sample_rate) VALUES (1700000000000, 1500, 200, 1, 1, 0, 1.0)")
        conn.commit()
    finally:
        conn.close()
    return path


@pytest.mark.parametrize("origin", ["new", "0.1.1", "version 1"])
def test_files_get_the_schema_of_version_6(tmp_path, origin):
    if origin == "new":
        path, expected = tmp_path / "log.db", FIXTURES / "schema-v6.sql"
    elif origin == "0.1.1":
        path, expected = upgraded_0_1_1(tmp_path), FIXTURES / "schema-v6-from-0.1.1.sql"
    else:
        # Upgraded in place from version 1, a file is what a new one is.
        path, expected = made_by_version_1(tmp_path), FIXTURES / "schema-v6.sql"
    create_file(str(path))
    db = sqlite_utils.Database(path)
    try:
        assert_same_schema(db, expected)
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        assert db.journal_mode == "wal"
        assert db.execute("SELECT count(*) FROM log_meta WHERE key = 'file_id'").fetchone()[0] == 1
        # New files give freed pages back to the disk; older ones keep their setting until `vacuum`.
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == (2 if origin == "new" else 0)
        if origin == "version 1":
            assert db.execute("SELECT p.name, r.http_status FROM request_log r JOIN paths p ON p.id = r.path_id"
                              ).fetchall() == [("/kept", 200)]
            # An agent of version 1 has no classes yet: the writer or `agents --reclassify` fills them.
            assert db.execute("SELECT browser, is_bot FROM user_agents").fetchall() == [(None, None)]
    finally:
        db.close()


def test_a_failed_upgrade_leaves_the_0_1_1_file_as_it_was(tmp_path):
    # A table of the user's own under the name the upgrade gives the old rows: the upgrade fails at that
    # step, after it has created the new tables. Nothing of it may stay, or the next start would find a
    # half-made schema; that holds only if nothing commits inside the migration's transaction.
    path = upgraded_0_1_1(tmp_path)
    db = sqlite_utils.Database(path)
    try:
        db.execute("CREATE TABLE requests_0_1 (note TEXT)")
        before = (set(db.table_names()), set(db.view_names()), db.execute("SELECT * FROM requests").fetchall())
    finally:
        db.close()

    with pytest.raises(sqlite3.OperationalError, match="requests_0_1"):
        create_file(str(path))

    db = sqlite_utils.Database(path)
    try:
        assert (set(db.table_names()), set(db.view_names()), db.execute("SELECT * FROM requests").fetchall()) == before
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
        db.table("requests_0_1").drop()
    finally:
        db.close()
    create_file(str(path))  # with the clash gone, the same file upgrades
    db = sqlite_utils.Database(path)
    try:
        assert db.table("requests_0_1").count == len(before[2])
        assert db["requests"].count == len(before[2])
    finally:
        db.close()


def _set_up(path, barrier):
    """One process: wait for the others, then set up the same fresh file at the same instant."""
    barrier.wait()
    try:
        create_file(path)
    except BaseException as error:
        # Said on stderr (pytest shows it with the failure) and in the exit code the test checks.
        print(f"process {os.getpid()}: {error!r}", file=sys.stderr, flush=True)
        os._exit(3)
    os._exit(0)


@pytest.mark.parametrize("round_", range(5))
def test_processes_setting_up_one_fresh_file_at_once_all_succeed(tmp_path, round_):
    path = str(tmp_path / "fresh.db")
    processes = 8
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    workers = [context.Process(target=_set_up, args=(path, barrier)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0] * processes
    db = sqlite_utils.Database(path)
    try:
        assert_same_schema(db, FIXTURES / "schema-v6.sql")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def test_a_version_2_file_gets_the_sites_totals_summed_from_its_rollups(tmp_path):
    """Version 3 adds rollup_traffic_hourly and _daily; a version 2 file's are its detailed rollups summed,
    and its readable view gains the agent's classes if it was made without them."""
    path = str(tmp_path / "v2.db")
    conn = sqlite3.connect(path, isolation_level=None)
    db = sqlite_utils.Database(conn)
    for migrate in log_schema.MIGRATIONS[:2]:
        migrate(db)
    # As version 2 was first released: its readable view without the agent's classes.
    conn.execute("DROP VIEW readable_requests")
    conn.execute(f"CREATE VIEW readable_requests AS {log_schema._READABLE_V1}")
    conn.execute("PRAGMA user_version = 2")
    key = "route_id, path_id, method_id, status_class, is_bot, bucket, hits, bytes, duration_us_sum, duration_us_max"
    rows = [(480_000, 1, 0, 1, 2, 0, 80, 3, 30, 900, 400), (480_000, 0, 7, 1, 2, 0, 80, 2, 20, 700, 500),
            (480_000, 0, 7, 1, 4, 1, 12, 1, 5, 9, 9), (480_001, 1, 0, 1, 2, 0, -1, 4, 40, 0, None)]
    conn.executemany(f"INSERT INTO rollup_hourly (hour, {key}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany(f"INSERT INTO rollup_daily (day, {key}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                     f"ON CONFLICT DO UPDATE SET hits = hits + excluded.hits, bytes = bytes + excluded.bytes, "
                     f"duration_us_sum = duration_us_sum + excluded.duration_us_sum",
                     [(row[0] // 24,) + row[1:] for row in rows])
    conn.close()
    create_file(path)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == log_schema.SCHEMA_VERSION
        assert conn.execute("SELECT hour, status_class, is_bot, bucket, hits, bytes, duration_us_sum, duration_us_max "
                            "FROM rollup_traffic_hourly ORDER BY 1, 2, 3, 4").fetchall() == [
            (480_000, 2, 0, 80, 5, 50, 1600, 500), (480_000, 4, 1, 12, 1, 5, 9, 9), (480_001, 2, 0, -1, 4, 40, 0, None)]
        assert conn.execute("SELECT day, sum(hits), sum(bytes) FROM rollup_traffic_daily GROUP BY day").fetchall() == [
            (20_000, 10, 95)]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(readable_requests)")]
        assert columns[columns.index("user_agent"):][:5] == ["user_agent", "browser", "os", "device", "is_bot"]
    finally:
        conn.close()


def file_of_version(path, version, rows):
    """A file made by the migrations up to ``version``, with paths /a and /b and request_log ``rows`` of
    (start_ms, http_status, body_size, duration_us, path_id); its connection, still open."""
    conn = sqlite3.connect(path, isolation_level=None)
    db = sqlite_utils.Database(conn)
    for migrate in log_schema.MIGRATIONS[:version]:
        migrate(db)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("INSERT INTO paths (id, name) VALUES (1, '/a'), (2, '/b')")
    conn.executemany("INSERT INTO request_log (start_ms, http_status, body_size, duration_us, path_id) VALUES (?, ?, ?, ?, ?)",
                     rows)
    return conn


def test_a_version_3_file_gets_its_rows_summed_into_the_top_lists_behind_the_writer(tmp_path):
    """Version 4 adds the top lists' rollups with the watermark at 0: the rows a version 3 file holds
    are summed into them by the next catch-up, not inside the upgrade."""
    path = str(tmp_path / "v3.db")
    file_of_version(path, 3, [(3_600_000, 200, 10, 100, 1), (3_600_001, 404, 5, 300, 1), (7_200_000, 500, 1, None, 2)]
                    ).close()
    create_file(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM rollup_paths_hourly").fetchone()[0] == 0
        assert toplists.behind(conn) == 3
        assert toplists.catch_up(conn)
        assert conn.execute("SELECT * FROM rollup_paths_hourly ORDER BY hour").fetchall() == [
            (1, 1, 2, 1, 0, 15, 400, 2), (2, 2, 1, 0, 1, 1, 0, 0)]
        assert conn.execute("SELECT * FROM rollup_paths_daily").fetchall() == [(0, 1, 2, 1, 0, 15, 400, 2), (0, 2, 1, 0, 1, 1, 0, 0)]
        assert toplists.behind(conn) == 0
    finally:
        conn.close()


def test_a_version_4_file_has_its_rollups_count_every_row_it_holds(tmp_path):
    """Before version 5 the rollups were kept in each batch's transaction: the upgrade puts their
    watermark at the newest row, so that no row is summed into them twice, and a writer's rows after
    it are summed once."""
    from asgi_log_to_sqlite import rollups

    path = str(tmp_path / "v4.db")
    conn = file_of_version(path, 4, [(3_600_000, 200, 10, 100, 1), (3_600_001, 404, 5, 300, 1)])
    # As a version 4 writer did, in the batch's transaction (it had no per-route sums, version 6's).
    conn.execute(rollups._FILL_BATCH, (1, 2))
    conn.execute(rollups._TO_HOURLY)
    conn.execute(rollups._TO_DAILY)
    rollups.add_site_totals(conn)
    conn.execute("DELETE FROM rollup_batch")
    conn.close()
    create_file(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert rollups.WATERMARK.marked(conn) == 2 and rollups.WATERMARK.behind(conn) == 0
    finally:
        conn.close()
    write_one_request(path, "/a")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("SELECT sum(hits) FROM rollup_hourly").fetchone()[0] == 3
        assert conn.execute("SELECT sum(hits) FROM rollup_daily").fetchone()[0] == 3
        assert rollups.WATERMARK.marked(conn) == 3
    finally:
        conn.close()



def test_a_version_5_file_gets_its_per_route_sums_from_its_rollups(tmp_path):
    """Version 6 adds rollup_routes_daily and rollup_route_latency_daily: a version 5 file's are its
    detailed rollups summed in the upgrade, and the writer's rows after it are added to both."""
    from asgi_log_to_sqlite import rollups

    path = str(tmp_path / "v5.db")
    conn = file_of_version(path, 5, [(3_600_000, 200, 10, 100, 1), (3_600_001, 404, 5, 300, 1), (7_200_000, 500, 1, None, 2)])
    conn.execute(rollups._FILL_BATCH, (1, 3))
    conn.execute(rollups._TO_HOURLY)
    conn.execute(rollups._TO_DAILY)
    rollups.add_site_totals(conn)
    conn.execute("DELETE FROM rollup_batch")
    rollups.WATERMARK.set_mark(conn, 3)
    conn.close()
    create_file(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        # day, route, path, hits, bots, 4xx, 5xx, bytes, duration sum, timed, longest
        assert conn.execute("SELECT * FROM rollup_routes_daily ORDER BY path_id").fetchall() == [
            (0, 0, 1, 2, 0, 1, 0, 15, 400, 2, 300), (0, 0, 2, 1, 0, 0, 1, 1, 0, 0, None)]
        # Only timed requests have a latency bucket: 100 µs is bucket 53, 300 µs bucket 65.
        assert conn.execute("SELECT * FROM rollup_route_latency_daily ORDER BY bucket").fetchall() == [
            (0, 0, 1, 53, 1, 100), (0, 0, 1, 65, 1, 300)]
    finally:
        conn.close()
    write_one_request(path, "/a")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert conn.execute("SELECT sum(hits) FROM rollup_routes_daily").fetchone()[0] == 4
        assert conn.execute("SELECT sum(hits) FROM rollup_route_latency_daily").fetchone()[0] == 3
    finally:
        conn.close()
