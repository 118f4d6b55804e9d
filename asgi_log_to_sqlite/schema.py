"""Tables, views and versioned migrations of a log database.

Storage is one compact table, ``request_log``, whose columns are integers or lookup ids. The 0.1.1
names stay readable through views: ``requests`` has the original twelve columns with their original
meaning (``start`` in epoch seconds, ``duration`` in seconds, ``path`` a ``paths.id``, ...).

The version lives in ``PRAGMA user_version``. A 0.1.1 file (version 0 with a ``requests`` table) is
upgraded in place: its table is renamed ``requests_0_1`` and kept whole, and the ``requests`` view
reads it alongside the new rows, so nothing is lost or rewritten.

Schema set-up runs inside ``BEGIN IMMEDIATE`` and checks the version after taking the write lock,
so any number of processes may start on one fresh file at the same moment. sqlite-utils writes the
tables, indexes and views; the transaction, the version, the switch to WAL and the writer's INSERT
stay raw sqlite3.
"""
from __future__ import annotations

import os
import sqlite3
import time
import uuid
from typing import Callable, List, Optional

import sqlite_utils

from . import agents, rollups, route_summaries, toplists
from .failures import retry_while_locked
from .files import check_writable, ensure_file
from .rotation import DatedPath, is_dated

SCHEMA_VERSION = 6

# The six lookup tables of 0.1.1, then ours. Each is (id integer primary key, name text unique).
LEGACY_LOOKUPS = ("paths", "query_strings", "user_agents", "referers", "accept_languages", "content_types")
LOOKUPS = LEGACY_LOOKUPS + ("methods", "client_ips", "hosts", "routes")

# Columns of request_log in the order the writer binds them (after the rowid), which is not the
# table's order. Every row binds these; record.Shaper.rows_into lays them out in this order (checked at import).
COMMON_COLUMNS = (
    "start_ms",            # request start, integer milliseconds since the Unix epoch
    "duration_us",         # whole response, streaming included, integer microseconds
    "ttfb_us",             # time to the response start message, microseconds; NULL if none was sent
    "http_status",         # sent status; 500 for an exception before the response; 499 for a disconnect
    "body_size",           # response body bytes handed to the server; 0 for HEAD
    "request_size",        # request body bytes received
    "flags",               # bit set, see FLAG_* in record.py
    "method_id",
    "path_id",
    "query_string_id",
    "user_agent_id",
    "referer_id",
    "accept_language_id",
    "content_type_id",
    "client_ip_id",        # socket peer, truncated by default
    "host_id",
    "route_id",
)
# Bound only for websocket sessions, when an option fills them, and for a sampled middleware; plain
# HTTP rows leave them NULL, and sample_rate to its DEFAULT 1.0, without binding anything (seven
# fewer parameters per row).
OPTIONAL_COLUMNS = (
    "sample_rate",         # 1.0 when every request is logged
    "forwarded_ip_id",     # resolved from trusted proxy headers, same truncation
    "ws_messages_in",
    "ws_messages_out",
    "ws_close_code",
    "request_id",
    "extra",               # JSON object of configured extra headers, or NULL
)
COLUMNS = COMMON_COLUMNS + OPTIONAL_COLUMNS

# Python's sqlite3 binds None slowly (it tries adapters first, through a raised AttributeError):
# with a dozen NULLs a row cost 8 us to insert instead of 2.3. So the writer binds a cheap
# sentinel and the INSERT turns it back into NULL: 0 for lookup ids and text (ids start at 1),
# -1 for numbers where 0 is a real value.
NULL_SENTINEL = {
    "ttfb_us": -1, "ws_messages_in": -1, "ws_messages_out": -1, "ws_close_code": -1,
    "method_id": 0, "path_id": 0, "query_string_id": 0, "user_agent_id": 0, "referer_id": 0,
    "accept_language_id": 0, "content_type_id": 0, "client_ip_id": 0, "forwarded_ip_id": 0,
    "host_id": 0, "route_id": 0, "request_id": 0, "extra": 0, "http_status": 0,
}


# Times the writer binds as floats (milliseconds or microseconds) and the INSERT truncates to
# integers, as int() would: three int() calls per row in Python cost more (~6% of the writer's
# instructions per row, measured with valgrind) than three CASTs in SQLite.
TRUNCATED = ("start_ms", "duration_us", "ttfb_us")


def placeholder(column: str, number: int, sentinel: Optional[int] = None) -> str:
    """The INSERT's expression for parameter ``number`` (1-based) bound to ``column``; a value of
    ``sentinel``, or else of NULL_SENTINEL's for the column, is stored as NULL.

    ``CASE ?N WHEN sentinel THEN NULL ELSE ?N END`` rather than ``nullif(?, sentinel)``: a CASE
    is a few VDBE opcodes where nullif is a function call, and across 15 columns that is ~0.7 us
    per row (measured, 128-row INSERTs: 2.4 us -> 1.7 us per row). The price is in preparing: the
    numbered parameters make it quadratic in their count (see inserts.ROWS_PER_STATEMENT).
    """
    value = f"CAST(?{number} AS INTEGER)" if column in TRUNCATED else f"?{number}"
    if sentinel is None:
        sentinel = NULL_SENTINEL.get(column)
    if sentinel is None:
        return value
    return f"CASE ?{number} WHEN {sentinel} THEN NULL ELSE {value} END"


# request_log's columns in table order (the writer names the columns it binds, so the two orders
# may differ), and the lookup table each id column references.
_REQUEST_LOG = {
    "id": int, "start_ms": int, "duration_us": int, "ttfb_us": int,
    "method_id": int, "path_id": int, "query_string_id": int, "user_agent_id": int, "referer_id": int,
    "accept_language_id": int, "http_status": int, "content_type_id": int, "client_ip_id": int,
    "forwarded_ip_id": int, "host_id": int, "route_id": int, "body_size": int, "request_size": int,
    "flags": int, "sample_rate": float, "ws_messages_in": int, "ws_messages_out": int, "ws_close_code": int,
    "request_id": str, "extra": str,
}
_REFERENCES = {
    "method_id": "methods", "path_id": "paths", "query_string_id": "query_strings", "user_agent_id": "user_agents",
    "referer_id": "referers", "accept_language_id": "accept_languages", "content_type_id": "content_types",
    "client_ip_id": "client_ips", "forwarded_ip_id": "client_ips", "host_id": "hosts", "route_id": "routes",
}
_LOG_COUNTERS = {"reason": str, "count": int, "first_ms": int, "last_ms": int, "last_error": str}

_NEW_ROWS_AS_0_1 = """
SELECT
    r.start_ms / 1000.0 AS start,
    m.name AS method,
    r.path_id AS path,
    r.query_string_id AS query_string,
    r.user_agent_id AS user_agent,
    r.referer_id AS referer,
    r.accept_language_id AS accept_language,
    r.http_status AS http_status,
    r.content_type_id AS content_type,
    ip.name AS client_ip,
    r.duration_us / 1000000.0 AS duration,
    r.body_size AS body_size
FROM request_log r
LEFT JOIN methods m ON m.id = r.method_id
LEFT JOIN client_ips ip ON ip.id = r.client_ip_id
"""

# The readable view as version 1 made it; version 2 adds the agent's classes (_READABLE).
_READABLE_V1 = """
SELECT
    r.id,
    strftime('%Y-%m-%dT%H:%M:%fZ', r.start_ms / 1000.0, 'unixepoch') AS start,
    m.name AS method,
    h.name AS host,
    p.name AS path,
    q.name AS query_string,
    rt.name AS route,
    r.http_status,
    ct.name AS content_type,
    r.duration_us / 1000.0 AS duration_ms,
    r.ttfb_us / 1000.0 AS ttfb_ms,
    r.body_size,
    r.request_size,
    ip.name AS client_ip,
    fip.name AS forwarded_ip,
    ua.name AS user_agent,
    ref.name AS referer,
    al.name AS accept_language,
    r.flags,
    r.sample_rate,
    r.ws_messages_in,
    r.ws_messages_out,
    r.ws_close_code,
    r.request_id,
    r.extra
FROM request_log r
LEFT JOIN methods m ON m.id = r.method_id
LEFT JOIN hosts h ON h.id = r.host_id
LEFT JOIN paths p ON p.id = r.path_id
LEFT JOIN query_strings q ON q.id = r.query_string_id
LEFT JOIN routes rt ON rt.id = r.route_id
LEFT JOIN content_types ct ON ct.id = r.content_type_id
LEFT JOIN client_ips ip ON ip.id = r.client_ip_id
LEFT JOIN client_ips fip ON fip.id = r.forwarded_ip_id
LEFT JOIN user_agents ua ON ua.id = r.user_agent_id
LEFT JOIN referers ref ON ref.id = r.referer_id
LEFT JOIN accept_languages al ON al.id = r.accept_language_id
"""
_READABLE = _READABLE_V1.replace(
    "    ua.name AS user_agent,\n",
    "    ua.name AS user_agent,\n    ua.browser,\n    ua.os,\n    ua.device,\n    ua.is_bot,\n",
)

_LEGACY_COLUMNS = (
    "start, method, path, query_string, user_agent, referer, accept_language, "
    "http_status, content_type, client_ip, duration, body_size"
)


def migrate_0_to_1(db: sqlite_utils.Database) -> None:
    """Version 0 (a new file, or one written by 0.1.1) to 1: lookups, request_log, log_counters, views."""
    for table in LOOKUPS:
        _create_table(db, table, {"id": int, "name": str}, pk="id")
        db.table(table).create_index(["name"], unique=True, if_not_exists=True)
    _create_table(db, "request_log", _REQUEST_LOG, pk="id",
                  foreign_keys=[(column, table, "id") for column, table in _REFERENCES.items()],
                  not_null=["start_ms", "flags", "sample_rate"], defaults={"flags": 0, "sample_rate": 1.0})
    _create_table(db, "log_counters", _LOG_COUNTERS, pk="reason", not_null=["count"])
    body = _NEW_ROWS_AS_0_1
    if "requests" in db.table_names():
        # A 0.1.1 database: keep its rows exactly as they are, under a new name.
        db.rename_table("requests", "requests_0_1")
        body += f"UNION ALL SELECT {_LEGACY_COLUMNS} FROM requests_0_1\n"
    db.create_view("requests", body, ignore=True)
    db.create_view("readable_requests", _READABLE_V1, ignore=True)


def migrate_1_to_2(db: sqlite_utils.Database) -> None:
    """Version 1 to 2: agent classes on user_agents (and in readable_requests), and the rollup tables."""
    agents.add_columns(db)
    # The readable view shows the agent's classes too: a bot flag to facet on, a browser to read.
    db.create_view("readable_requests", _READABLE, replace=True)
    rollups.create_tables(db)
    # Facts about the file itself. file_id tells merge a file it has merged before, wherever it moved.
    _create_table(db, "log_meta", {"key": str, "value": str}, pk="key")
    db.conn.execute("INSERT OR IGNORE INTO log_meta (key, value) VALUES ('file_id', ?)", (uuid.uuid4().hex,))


def migrate_2_to_3(db: sqlite_utils.Database) -> None:
    """Version 2 to 3: the whole site's hourly and daily totals, summed from the detailed rollups;
    and the readable view with the agent's classes, for files made before version 2 had them."""
    rollups.create_traffic_tables(db)
    if "is_bot" not in {column.name for column in db.view("readable_requests").columns}:
        db.create_view("readable_requests", _READABLE, replace=True)


def migrate_3_to_4(db: sqlite_utils.Database) -> None:
    """Version 3 to 4: the top lists' rollups (paths, referrers, agents), summed behind the writer
    from the rows already there (toplists.py)."""
    toplists.create_tables(db)


def migrate_4_to_5(db: sqlite_utils.Database) -> None:
    """Version 4 to 5: the rollups count the rows up to a watermark, as the top lists do, so that a
    writer can add its sums every few seconds rather than every batch (rollups.py)."""
    rollups.create_watermark(db)


def migrate_5_to_6(db: sqlite_utils.Database) -> None:
    """Version 5 to 6: the rollups' sums per route, and per route and latency bucket, summed from
    the detailed rollups already there (route_summaries.py)."""
    route_summaries.create_tables(db)


MIGRATIONS: List[Callable[[sqlite_utils.Database], None]] = [migrate_0_to_1, migrate_1_to_2, migrate_2_to_3,
                                                            migrate_3_to_4, migrate_4_to_5, migrate_5_to_6]


def _create_table(db: sqlite_utils.Database, name: str, columns: dict, **options) -> None:
    # sqlite-utils writes the CREATE TABLE; we run it, because Table.create() wraps itself in
    # "with conn:" on sqlite-utils 3.x, which would COMMIT the migration and release its lock.
    db.conn.execute(db.create_table_sql(name, columns, if_not_exists=True, **options))


def _database(conn: sqlite3.Connection) -> sqlite_utils.Database:
    # Borrowing the writer's connection: no recursive_triggers pragma, no sqlite-utils plugins on it.
    return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)


def ensure_schema(conn: sqlite3.Connection, deadline_s: float = 30.0) -> int:
    """Bring the file to SCHEMA_VERSION; safe when several processes do it at once. Returns the version found."""
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        # A new, empty file: pages freed by pruning go back to the disk (retention.py runs the
        # incremental vacuum). Only possible before the first table, and before the switch to WAL.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    # WAL first: changing the journal mode needs no other connection mid-write, so retry while busy.
    # Raw, and read to the end: SQLite can report an I/O error in the switch only on the statement's
    # second step, which sqlite-utils' enable_wal() never takes; the failed switch then went unseen.
    retry_while_locked(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchall(), deadline_s)
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found >= SCHEMA_VERSION:
        return found

    def upgrade() -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            db = _database(conn)
            for step in MIGRATIONS[version:SCHEMA_VERSION]:
                step(db)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
            return version
        except BaseException:
            # A failed COMMIT (an I/O error) has already rolled back: ROLLBACK would then raise
            # "no transaction is active" and hide the real error.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    return retry_while_locked(upgrade, deadline_s)


def create_file(path: str) -> str:
    """Create (or upgrade) a log file now, so that Datasette can open it before the first request.

    ``path`` may be a dated pattern (rotation.py): the file of the present moment is created.
    Returns the path of the file.
    """
    if is_dated(path):
        path = DatedPath(path).path_for(time.time() * 1000)
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    check_writable(path)
    ensure_file(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        ensure_schema(conn)
    finally:
        conn.close()
    return path
