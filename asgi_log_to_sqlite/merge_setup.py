"""The files a merge or a rotation works on: checking a source, preparing the destination, and
the destination's connection with a source ATTACHed, its ledger and its temp id maps.
"""
from __future__ import annotations

import datetime
import os
import pathlib
import sqlite3
import time

import sqlite_utils

from .failures import retry_while_locked
from .schema import LOOKUPS, SCHEMA_VERSION, create_file

LEDGER = "log_merged_sources"


class MergeError(ValueError):
    """A source or destination that cannot be merged or rotated; the message is one line naming it."""


class Attached:
    """A connection to the destination with the source ATTACHed read-only as ``src``, for a with block."""

    def __init__(self, destination: str, source: str):
        self.destination, self.source = destination, source

    def __enter__(self) -> sqlite3.Connection:
        self.conn = connect(self.destination)
        try:
            self.conn.execute("ATTACH DATABASE ? AS src", (file_uri(self.source, "ro"),))
            self.conn.execute("ATTACH DATABASE ':memory:' AS period")
        except BaseException:
            self.conn.close()
            raise
        return self.conn

    def __exit__(self, *exc) -> None:
        self.conn.close()


def check_log(path: str, *, upgradable: bool = False) -> None:
    """Raise MergeError unless ``path`` is a log database of this schema version (any version if ``upgradable``)."""
    if not os.path.exists(path):
        raise MergeError(f"{path}: no such file")
    if os.path.isdir(path):
        raise MergeError(f"{path}: is a directory; give a log database file")
    conn = sqlite3.connect(file_uri(path, "ro"), uri=True)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise MergeError(f"{path}: not a SQLite database ({error})") from None
    finally:
        conn.close()
    if "request_log" not in tables and not (upgradable and (not tables or "requests" in tables)):
        raise MergeError(f"{path}: not a request log (it has no request_log table)")
    if version != SCHEMA_VERSION and not upgradable:
        raise MergeError(f"{path}: a log of schema version {version}, expected {SCHEMA_VERSION}; upgrade it first "
                         f"with: python -c 'import asgi_log_to_sqlite; asgi_log_to_sqlite.create_file(\"{path}\")'")


def prepare(destination: str) -> None:
    """Create the destination log, or bring an existing one to this schema version (as logging to it would)."""
    if os.path.exists(destination):
        check_log(destination, upgradable=True)
    try:
        create_file(destination)
    except ValueError as error:
        raise MergeError(str(error)) from None


def connect(path: str) -> sqlite3.Connection:
    """The destination, autocommit, with the ledger and the temp id maps."""
    conn = sqlite3.connect(file_uri(path, "rw"), uri=True, isolation_level=None, timeout=5)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA temp_store = MEMORY")
    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    conn.execute(db.create_table_sql(LEDGER, {
        "file_id": str, "first_ms": int, "last_ms": int, "via": str, "path": str, "last_row_id": int,
        "rolled_up_to": int, "listed_to": int, "legacy_rowid": int, "rows": int, "counters": str, "merged_at": str,
    }, pk=("file_id", "first_ms", "last_ms"), not_null={"first_ms", "last_ms", "last_row_id", "rolled_up_to",
                                                        "legacy_rowid", "rows"},
        defaults={"last_row_id": 0, "rolled_up_to": 0, "legacy_rowid": 0, "rows": 0}, if_not_exists=True))
    # Added with merge's slices for the top lists; a ledger made before has none (NULL: as rolled_up_to).
    if "listed_to" not in {row[1] for row in conn.execute(f"PRAGMA table_info({LEDGER})")}:
        try:
            conn.execute(f"ALTER TABLE {LEDGER} ADD COLUMN listed_to INTEGER")
        except sqlite3.OperationalError as error:
            if "duplicate column" not in str(error):  # another merge added it first
                raise
    for table in LOOKUPS:
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS map_{table} (old_id INTEGER PRIMARY KEY, new_id INTEGER NOT NULL)")
    return conn


class transaction:
    """BEGIN IMMEDIATE .. COMMIT, or ROLLBACK on any error; retried while another process holds the lock."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> "transaction":
        retry_while_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"), 30, first_delay=0.05, longest_delay=0.05)
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.seconds = time.perf_counter() - self.started   # how long the write lock was held


def file_id(conn: sqlite3.Connection, schema: str) -> str:
    return conn.execute(f"SELECT value FROM {schema}.log_meta WHERE key = 'file_id'").fetchone()[0]


def has_table(conn: sqlite3.Connection, schema: str, table: str) -> bool:
    return conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?",
                        (table,)).fetchone() is not None


def file_uri(path: str, mode: str) -> str:
    # From the absolute path, so that '?', '#' or '%' in a file name stay part of the name.
    return pathlib.Path(path).absolute().as_uri() + f"?mode={mode}"


def now_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
