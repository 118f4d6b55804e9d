"""The log file itself: created private, checked before logging starts, recognised when replaced."""
from __future__ import annotations

import os
from typing import Optional, Tuple


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
