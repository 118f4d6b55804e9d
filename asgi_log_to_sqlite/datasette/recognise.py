"""Is this Datasette database a log? Told by its schema, read once per file and again when the file changes.

A log is a file at schema version 3 or later (``PRAGMA user_version``) with ``request_log``,
``log_meta`` and the ten lookup tables. The answer is kept per Datasette ``Database`` object: a log
stays a log as long as its path names the same file (device and inode), so the many metadata look-ups
of one page cost a ``stat`` each. Any other database is read again when its file or its WAL changes,
so a file that becomes a log while Datasette runs (the logger set it up) is recognised on the next
request.
"""
from __future__ import annotations

import os
import sqlite3
import urllib.parse
import weakref
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ..schema import LOOKUPS

MIN_VERSION = 4  # the ready-made queries read the top lists (rollup_paths_hourly, ...) of version 4
REQUIRED_TABLES = frozenset(("request_log", "log_meta") + LOOKUPS)


@dataclass(frozen=True, eq=False)
class LogSchema:
    """What a log database holds: its schema version and every table's and view's columns, in order.

    Compared by identity: a new one is read only when the file changed, which is what caches key on.
    """

    version: int
    columns: Mapping[str, Tuple[str, ...]]


@dataclass(frozen=True)
class _Seen:
    identity: Tuple[int, int]        # (st_dev, st_ino) of the file
    stamp: Tuple[Any, ...]           # what changes when the file or its WAL is written
    schema: Optional[LogSchema]


_seen: "weakref.WeakKeyDictionary[Any, _Seen]" = weakref.WeakKeyDictionary()


def read_log_schema(conn: sqlite3.Connection) -> Optional[LogSchema]:
    """The log schema read through ``conn``, or None when the database is not a log."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version < MIN_VERSION:
        return None
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    if not REQUIRED_TABLES <= names:
        return None
    columns: Dict[str, list] = {}
    for table, column in conn.execute(
        "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p "
        "WHERE m.type IN ('table', 'view') ORDER BY m.name, p.cid"
    ):
        columns.setdefault(table, []).append(column)
    return LogSchema(version, {table: tuple(names) for table, names in columns.items()})


def _stamp(path: str, main: os.stat_result) -> Tuple[Any, ...]:
    try:
        wal = os.stat(path + "-wal")
        wal_stamp: Any = (wal.st_mtime_ns, wal.st_size)
    except OSError:
        wal_stamp = None
    return (main.st_mtime_ns, main.st_size, wal_stamp)


def _read(path: str, mutable: bool) -> Optional[LogSchema]:
    # Opened as Datasette opens it: read-only, or immutable for a database served with -i.
    mode = "mode=ro" if mutable else "immutable=1"
    conn = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?{mode}", uri=True)
    try:
        return read_log_schema(conn)
    finally:
        conn.close()


def log_schema(db: Any) -> Optional[LogSchema]:
    """The log schema of a Datasette ``Database``, or None when it is not a log (or is in memory)."""
    path = getattr(db, "path", None)
    if not path or getattr(db, "is_memory", False):
        return None
    try:
        main = os.stat(path)
    except OSError:
        return None
    identity = (main.st_dev, main.st_ino)
    seen = _seen.get(db)
    if seen is not None and seen.identity == identity and seen.schema is not None:
        return seen.schema
    stamp = _stamp(path, main)
    if seen is not None and seen.identity == identity and seen.stamp == stamp:
        return None
    try:
        schema = _read(path, getattr(db, "is_mutable", True))
    except sqlite3.Error:
        # Not readable as SQLite right now (being replaced, or not a database): ask again next time.
        return None
    _seen[db] = _Seen(identity, stamp, schema)
    return schema


def log_databases(datasette: Any) -> Dict[str, LogSchema]:
    """Every log database of this Datasette, by name, with its schema."""
    found = {}
    for name, db in datasette.databases.items():
        schema = log_schema(db)
        if schema is not None:
            found[name] = schema
    return found


def database_log_schema(datasette: Any, name: Optional[str]) -> Optional[LogSchema]:
    """The log schema of the database called ``name``, or None when it is not a log or does not exist."""
    db = datasette.databases.get(name) if name is not None else None
    return log_schema(db) if db is not None else None
