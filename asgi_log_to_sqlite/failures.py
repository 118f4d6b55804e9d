"""What a failed write was, by reason, and which reasons waiting can cure."""
from __future__ import annotations

import sqlite3
import time
from typing import Callable, TypeVar

T = TypeVar("T")

# A batch that meets one of these is held and retried, not dropped. A corrupt file or an
# unexpected error would fail the same way forever, so it is counted at once.
RETRIED = frozenset({"locked", "disk_full", "io_error", "readonly", "cannot_open"})


def classify(error: BaseException) -> str:
    """The counted reason for an error raised by SQLite or the file system."""
    text = str(error).lower()
    if "locked" in text or "busy" in text:
        return "locked"
    if "readonly" in text or "read-only" in text:
        return "readonly"
    if "full" in text:
        return "disk_full"
    if "disk i/o" in text or "ioerr" in text:
        return "io_error"
    if "unable to open" in text or "no such file" in text:
        return "cannot_open"
    if isinstance(error, sqlite3.DatabaseError) and "malformed" in text:
        return "corrupt"
    return "write_error"


def is_locked(error: BaseException) -> bool:
    """Whether ``error`` is another connection holding the write lock past busy_timeout."""
    return classify(error) == "locked"


def retry_while_locked(action: Callable[[], T], deadline_s: float, *, first_delay: float = 0.01,
                       longest_delay: float = 0.5) -> T:
    """Run ``action``, again while another connection holds the lock; past ``deadline_s`` the lock's error is raised.

    For work outside the writer (schema set-up, imports, merges), which has no queue to hold a batch in.
    """
    deadline = time.monotonic() + deadline_s
    delay = first_delay
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            if not is_locked(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, longest_delay)
