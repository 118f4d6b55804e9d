"""What a failed write was, by reason, and which reasons waiting can cure."""
from __future__ import annotations

import sqlite3

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
