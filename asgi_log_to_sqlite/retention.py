"""Retention: prune the oldest rows by age, count and size, in small transactions; give space back."""
from __future__ import annotations

import sqlite3
from typing import Optional


class Retention:
    """The retention options of one log file; run from the writer's thread between batches."""

    def __init__(self, path: str, *, keep_days: Optional[float] = None, keep_rows: Optional[int] = None,
                 max_size_mb: Optional[float] = None):
        self.path = path
        self.keep_days = keep_days
        self.keep_rows = keep_rows
        self.max_size_mb = max_size_mb

    @staticmethod
    def validate(*, keep_days: Optional[float], keep_rows: Optional[int], max_size_mb: Optional[float]) -> None:
        """Raise ValueError naming the option and the expected form: called at construction."""
        if max_size_mb is not None and not (isinstance(max_size_mb, (int, float)) and max_size_mb > 0):
            raise ValueError(f"max_size_mb={max_size_mb!r}: expected a positive number of megabytes, for example 500")

    def page_limit(self, conn: sqlite3.Connection) -> Optional[int]:
        """The PRAGMA max_page_count that enforces the size budget on ``conn``, or None for none."""
        if self.max_size_mb is None:
            return None
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        return max(1, int(self.max_size_mb * 1024 * 1024 // page_size))

    def due(self, now: float) -> bool:
        """Whether run() has work to look at, ``now`` being time.monotonic(): cheap, called often."""
        return False

    def run(self, conn: sqlite3.Connection, *, full: bool = False) -> None:
        """One round of pruning on ``conn`` (autocommit, no transaction open), in small transactions.

        ``full``: the size budget was hit (SQLITE_FULL); free room now, whatever the schedule says.
        """
