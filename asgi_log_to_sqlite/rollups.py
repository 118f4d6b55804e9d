"""Hourly and daily aggregates of request_log, kept current by the writer, set-based per batch."""
from __future__ import annotations

import sqlite3

import sqlite_utils


def create_tables(db: sqlite_utils.Database) -> None:
    """Create the rollup tables (schema version 2)."""


class Rollups:
    """Used on the writer thread, inside the transaction that inserted the rows."""

    def update(self, conn: sqlite3.Connection, first_id: int, last_id: int) -> None:
        """Add request_log rows first_id..last_id (the batch just inserted) to the rollups."""
