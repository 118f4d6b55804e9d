"""What each ``log_counters`` reason means, in one line, for ``stats`` and ``check``."""
from __future__ import annotations

# What each log_counters reason means, in a line. The first word says whether rows were lost.
REASONS = {
    "queue_full": "lost: the writer's queue (queue_size) was full; the request was served, its row dropped",
    "locked": "lost: a stop gave up while another connection held the file's lock (stop_timeout_ms)",
    "disk_full": "lost: a stop gave up while the disk, or the max_size_mb budget, was full",
    "io_error": "lost: a stop gave up while the file kept failing with I/O errors",
    "readonly": "lost: a stop gave up while the file or its directory was read-only",
    "cannot_open": "lost: a stop gave up while the file could not be opened (its directory removed?)",
    "corrupt": "lost: the file was malformed when the batch was written; run `asgi-log-to-sqlite check`",
    "write_error": "lost: SQLite refused the batch for a reason waiting cannot cure (see last_error)",
    "record_error": "lost: a request could not be shaped into a row (a bug: please report it)",
    "internal_error": "lost: the middleware failed to queue a record (a bug: please report it)",
    "bucketed": "kept: a value past max_distinct_values was stored as (other)",
    "excluded": "kept out on purpose: include / exclude",
    "sampled_out": "kept out on purpose: sample_rate",
}
UNKNOWN_REASON = "lost: a reason this version does not know (see last_error)"


def meaning(reason: str) -> str:
    """The line for ``reason``; its first word says whether rows were lost ("lost") or not."""
    return REASONS.get(reason, UNKNOWN_REASON)
