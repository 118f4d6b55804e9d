"""The log file itself: created private, checked before logging starts, recognised when replaced, opened for writing."""
from __future__ import annotations

import os
import sqlite3
from typing import Callable, Optional, Tuple

# Bytes the -wal file is truncated back to after a checkpoint (SQLite's auto-checkpoint is ~4 MB).
WAL_SIZE_LIMIT = 4 * 1024 * 1024


def file_identity(path: str) -> Optional[Tuple[int, int]]:
    """(device, inode) of the file at ``path``, or None when there is none: tells a replaced file apart."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def ensure_file(path: str) -> None:
    """Create the database file readable by its owner only; SQLite gives -wal and -shm the same mode."""
    if path == ":memory:" or os.path.exists(path):
        return
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)


def check_writable(path: str) -> None:
    """Raise ValueError naming the file when it cannot be logged to: called at construction."""
    if path == ":memory:":
        raise ValueError('file=":memory:": a log needs a file that the writer thread can open; give a path')
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"cannot log to {path!r}: directory {directory!r} does not exist; create it first")
    if os.path.exists(path):
        if os.path.isdir(path):
            raise ValueError(f"cannot log to {path!r}: it is a directory; give a file path like {os.path.join(path, 'log.db')!r}")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ValueError(f"cannot log to {path!r}: the file is not writable by this process (uid {os.getuid()})")
    elif not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"cannot log to {path!r}: directory {directory!r} is not writable by this process (uid {os.getuid()})")


def open_writer_connection(path: str, busy_timeout_ms: int,
                           page_limit: Callable[[sqlite3.Connection], Optional[int]]) -> sqlite3.Connection:
    """The writer thread's connection to ``path``: schema brought up to date, WAL, the size budget set."""
    from . import schema  # schema.py imports this module for its file checks

    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        schema.ensure_schema(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        # A reader that holds a snapshot for long lets the -wal grow past the checkpoint size;
        # this truncates it back once checkpoints get through again.
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        pages = page_limit(conn)
        if pages is not None:
            # A size budget: past it SQLite answers SQLITE_FULL, handled like a full disk: retention
            # frees the oldest rows and the held batch is retried.
            conn.execute(f"PRAGMA max_page_count = {pages}")
    except Exception:
        conn.close()
        raise
    return conn
