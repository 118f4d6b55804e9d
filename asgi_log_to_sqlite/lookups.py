"""Ids of the values in the lookup tables (paths, user_agents, ...) of one database file.

Each value's id is cached in memory. A new value is inserted with ``INSERT ... ON CONFLICT DO
NOTHING`` then found with ``SELECT``, so processes sharing the file never collide. With
``max_distinct_values`` set, a table that holds that many values takes no new ones: they are
stored as BUCKET and their rows flagged FLAG_BUCKETED.
"""
from __future__ import annotations

import sqlite3
from typing import Dict, Optional, Tuple

from .counters import Counters
from .record import FLAG_BUCKETED

# What a lookup value past max_distinct_values is stored as (its rows carry FLAG_BUCKETED).
BUCKET = "(other)"
# Ids kept in memory per table; beyond this the cache starts over (a cardinality flood). The
# shapers' caches in front of this one take the repeats; this one serves shapers that share a file.
_CACHE_LIMIT = 10_000


class LookupIds:
    """Used on the writer thread only, inside its transactions, on ``conn`` (set by the writer)."""

    def __init__(self, counters: Counters, max_distinct_values: Optional[int]):
        self.counters = counters
        self.max_distinct_values = max_distinct_values
        self.conn: Optional[sqlite3.Connection] = None
        self._ids: Dict[str, Dict[str, int]] = {}   # table -> text -> id
        self._sizes: Dict[str, int] = {}            # table -> highest id seen

    def id_of(self, table: str, name: str) -> Tuple[int, int]:
        """(id, flags) of ``name`` in a lookup table, inserting it if new.

        Past max_distinct_values rows in the table, a new value is stored as BUCKET instead, with
        FLAG_BUCKETED: a flood of unique paths or agents cannot grow the file without bound.
        """
        cache = self._ids.get(table)
        if cache is None:
            cache = self._ids[table] = {}
        found = cache.get(name)
        if found is None:
            conn = self.conn
            if self.max_distinct_values is not None and name != BUCKET and self._full(table):
                row = conn.execute(f"SELECT id FROM [{table}] WHERE name = ?", (name,)).fetchone()
                if row is None:
                    self.counters.count("bucketed", 1)
                    return self.id_of(table, BUCKET)[0], FLAG_BUCKETED
                found = row[0]
            else:
                # ON CONFLICT DO NOTHING then SELECT: another process may have inserted it first.
                conn.execute(f"INSERT INTO [{table}] (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))
                found = conn.execute(f"SELECT id FROM [{table}] WHERE name = ?", (name,)).fetchone()[0]
                if found > self._sizes.get(table, 0):
                    self._sizes[table] = found
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[name] = found
        return found, 0

    def forget(self) -> None:
        """Drop every cached id: after a rollback, or when the file was replaced."""
        self._ids.clear()
        self._sizes.clear()

    def _full(self, table: str) -> bool:
        """Whether a lookup table holds max_distinct_values values (ids count up from 1, never reused)."""
        size = self._sizes.get(table)
        if size is None:
            size = self._sizes[table] = self.conn.execute(f"SELECT coalesce(max(id), 0) FROM [{table}]").fetchone()[0]
        return size >= self.max_distinct_values
