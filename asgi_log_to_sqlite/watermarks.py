"""A watermark: the highest request_log id that a set of summary tables counts, kept in ``log_meta``.

Every request_log row with an id at or below the mark is counted in the tables, and no row above
it is. Ids only grow (retention never deletes the newest row), so one number says it with any
number of processes writing the file, and any process may move it on: by summing the rows above
it from the raw rows (``catch_up``), or, for rows it has summed already, by passing over them
(``counted_already``). The top lists (toplists.py) and the rollups (rollups.py) each have one.
"""
from __future__ import annotations

import sqlite3
import time
from typing import Callable, Optional

# Rows summed per transaction: a live writer of the file waits for at most one slice, tens of ms
# where every row is a new key and hour (benchmarks/toplists.py).
SLICE_ROWS = 5_000

AddRows = Callable[[sqlite3.Connection, int, int], None]


class Watermark:
    """The mark under ``log_meta`` key ``key``; ``add_rows(conn, first_id, last_id)`` sums raw rows
    into the tables it guards, inside the caller's transaction; ``table`` is one of those tables."""

    def __init__(self, key: str, table: str, add_rows: AddRows):
        self.key = key
        self.table = table
        self.add_rows = add_rows
        # Raw rows the mark has not reached: what a reader adds to the tables (binds nothing).
        self.tail = f"r.id > coalesce((SELECT CAST(value AS INTEGER) FROM log_meta WHERE key = '{key}'), 0)"

    def has_tables(self, conn: sqlite3.Connection, schema: str = "main") -> bool:
        return conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE name = ?", (self.table,)).fetchone() is not None

    def marked(self, conn: sqlite3.Connection, schema: str = "main") -> int:
        """The mark: the highest request_log id counted (0 when none is)."""
        row = conn.execute(f"SELECT CAST(value AS INTEGER) FROM {schema}.log_meta WHERE key = ?", (self.key,)).fetchone()
        return row[0] if row is not None else 0

    def set_mark(self, conn: sqlite3.Connection, mark: int) -> None:
        conn.execute("INSERT INTO main.log_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                     (self.key, str(mark)))

    def behind(self, conn: sqlite3.Connection) -> int:
        """How many ids lie above the mark: about how many raw rows readers add to the tables."""
        if not self.has_tables(conn):
            return 0
        newest = conn.execute("SELECT max(id) FROM request_log").fetchone()[0]
        return max(0, (newest or 0) - self.marked(conn))

    def catch_up_slice(self, conn: sqlite3.Connection, rows: Optional[int] = SLICE_ROWS) -> int:
        """Sum the next ``rows`` rows above the mark (all of them when None), inside the caller's
        transaction; returns how many ids it moved over."""
        mark = self.marked(conn)
        newest = conn.execute("SELECT max(id) FROM request_log").fetchone()[0]
        if newest is None or newest < mark:
            # Emptied, or its newest rows deleted by hand: every row left is counted, new ones are not.
            self.set_mark(conn, newest or 0)
            return 0
        upto = newest if rows is None else min(newest, mark + rows)
        if upto > mark:
            self.add_rows(conn, mark + 1, upto)
            self.set_mark(conn, upto)
        return upto - mark

    def catch_up(self, conn: sqlite3.Connection, deadline: Optional[float] = None, rows: int = SLICE_ROWS) -> bool:
        """Move the mark to the newest row, a slice per BEGIN IMMEDIATE transaction on ``conn``
        (autocommit), until ``deadline`` (time.monotonic()) if given. True when it got to the end."""
        if not self.has_tables(conn):
            return True
        while deadline is None or time.monotonic() < deadline:
            conn.execute("BEGIN IMMEDIATE")
            try:
                moved = self.catch_up_slice(conn, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if moved < rows:
                return True
        return False

    def counted_already(self, conn: sqlite3.Connection, before: int, last_id: int) -> None:
        """Rows before+1..last_id, just inserted in the caller's transaction, are counted in the
        tables already (merge copied the tables that count them): sum the rows below them, then
        pass over them."""
        mark = self.marked(conn)
        if mark < before:
            self.add_rows(conn, mark + 1, before)
        self.set_mark(conn, last_id)
