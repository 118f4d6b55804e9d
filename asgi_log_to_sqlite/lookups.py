"""Ids of the values in the lookup tables (paths, user_agents, ...) of one database file.

Each value's id is cached in memory. A value not cached is looked for with ``SELECT``, and a new
one inserted with ``INSERT ... ON CONFLICT DO NOTHING`` (then found with ``SELECT`` if another
process inserted it first), so processes sharing the file never collide. With
``max_distinct_values`` set, a table that holds that many values takes no new ones: they are
stored as BUCKET and their rows flagged FLAG_BUCKETED.

A new user agent is classified (agents.Classifier) as its row is inserted, in the same transaction,
so the rollups of that batch read its bot flag; an agent row still without classes (stored before
schema version 2, or past a second's parsing budget) is completed the next time a writer looks it up.
"""
from __future__ import annotations

import functools
import json
import sqlite3
from typing import Dict, List, Optional, Sequence, Tuple

from . import agents
from .counters import Counters
from .record import FLAG_BUCKETED

# What a lookup value past max_distinct_values is stored as (its rows carry FLAG_BUCKETED).
BUCKET = "(other)"
# Ids kept in memory per table; beyond this the cache starts over (a cardinality flood). The
# shapers' caches in front of this one take the repeats; this one serves shapers that share a file.
_CACHE_LIMIT = 10_000
AGENTS = "user_agents"
# The columns a new user_agents row is inserted with: its text, then agents.Classes.
_AGENT_COLUMNS = ", ".join(("name",) + agents.COLUMNS)


@functools.lru_cache(maxsize=None)
def _insert_sql(table: str, columns: str, count: int) -> str:
    # ON CONFLICT DO NOTHING: another process may have inserted the value since the SELECT.
    return f"INSERT INTO [{table}] ({columns}) VALUES ({', '.join('?' * count)}) ON CONFLICT (name) DO NOTHING"


class LookupIds:
    """Used on the writer thread only, inside its transactions, on ``conn`` (set by the writer)."""

    def __init__(self, counters: Counters, max_distinct_values: Optional[int]):
        self.counters = counters
        self.max_distinct_values = max_distinct_values
        self.conn: Optional[sqlite3.Connection] = None
        # What a new user agent's classes come from; None leaves them NULL (benchmarks/agents.py
        # compares the two).
        self.classifier: Optional[agents.Classifier] = agents.Classifier()
        self._ids: Dict[str, Dict[str, int]] = {}   # table -> text -> id
        self._sizes: Dict[str, int] = {}            # table -> values it holds, counted once then kept up
        self._bots: Dict[int, int] = {}             # user agent id -> its bot flag, for the rollups

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
            if table == AGENTS:
                found = self._agent_id(conn, name)
            else:
                row = conn.execute(f"SELECT id FROM [{table}] WHERE name = ?", (name,)).fetchone()
                found = row[0] if row is not None else self._insert(conn, table, name, (name,))
            if found is None:
                self.counters.count("bucketed", 1)
                return self.id_of(table, BUCKET)[0], FLAG_BUCKETED
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[name] = found
        return found, 0

    def ids_of(self, table: str, names: Sequence[str]) -> List[Tuple[int, int]]:
        """(id, flags) of each of ``names`` (distinct) as id_of gives them one after another, found
        and inserted with a statement or two per table rather than two per value: for an import,
        whose chunks bring hundreds of new values and whose writer thread gives up the GIL at
        every statement."""
        if any("\x00" in name for name in names):
            # json_each would cut a text at its NUL (a TLS handshake read as a path): one by one.
            return [self.id_of(table, name) for name in names]
        cache = self._ids.setdefault(table, {})
        found = {name: cache[name] for name in names if name in cache}
        missing = [name for name in names if name not in found]
        if missing:
            more = self._found(table, missing)
            new = [name for name in missing if name not in more]
            if new:
                more.update(self._inserted(table, new))
            if len(cache) + len(more) > _CACHE_LIMIT:
                cache.clear()
            cache.update(more)
            found.update(more)
        looked = []
        for name in names:
            known = found.get(name)
            if known is not None:
                looked.append((known, 0))
            else:  # past max_distinct_values
                self.counters.count("bucketed", 1)
                looked.append((self.id_of(table, BUCKET)[0], FLAG_BUCKETED))
        return looked

    def _found(self, table: str, names: List[str]) -> Dict[str, int]:
        """The ids of those of ``names`` the table holds; a user agent's missing classes are filled in.

        Answered as one row of JSON: a row fetched is a step of the statement, and each step gives
        the GIL up and waits to have it back.
        """
        conn, listed = self.conn, json.dumps(names)
        within = "WHERE name IN (SELECT value FROM json_each(?))"
        if table != AGENTS:
            found = conn.execute(f"SELECT json_group_object(name, id) FROM [{table}] {within}", (listed,)).fetchone()[0]
            return json.loads(found)
        rows = json.loads(conn.execute(
            f"SELECT json_group_array(json_array(name, id, browser IS NULL, is_bot)) FROM user_agents {within}",
            (listed,)).fetchone()[0])
        for name, agent_id, unclassified, is_bot in rows:
            if unclassified and self.classifier is not None:
                classes = self.classifier.complete(name, is_bot)
                if classes is not None:
                    conn.execute(agents.SET_CLASSES, (*classes, agent_id))
        return {name: agent_id for name, agent_id, _, _ in rows}

    def _inserted(self, table: str, new: List[str]) -> Dict[str, int]:
        """Insert the values of ``new`` (none in the table) that max_distinct_values leaves room
        for, in order; their ids."""
        if self.max_distinct_values is not None:
            room = max(0, self.max_distinct_values - self._size(table))
            if room < len(new):
                new = new[:room] + ([BUCKET] if BUCKET in new[room:] else [])
        if not new:
            return {}
        if table == AGENTS and self.classifier is not None:
            classify = self.classifier
            rows = json.dumps([[name, *classify(name)] for name in new])
            values = ", ".join(f"value ->> {i}" for i in range(1 + len(agents.COLUMNS)))
            sql = f"INSERT INTO user_agents ({_AGENT_COLUMNS}) SELECT {values} FROM json_each(?1) WHERE true"
        else:
            rows = json.dumps(new)
            sql = f"INSERT INTO [{table}] (name) SELECT value FROM json_each(?1) WHERE true"
        # ON CONFLICT DO NOTHING, as in _insert: another process may have inserted one meanwhile.
        inserted = self.conn.execute(f"{sql} ON CONFLICT (name) DO NOTHING", (rows,)).rowcount
        if table in self._sizes:
            self._sizes[table] += inserted
        return self._found(table, new)

    def bot_of(self, agent_id: int) -> int:
        """The bot flag (0 or 1) of the user agent ``agent_id``: read once per id, as the rollups
        key it. A correction made to the row later reaches the rollups by ``rollup --rebuild``."""
        bot = self._bots.get(agent_id)
        if bot is None:
            row = self.conn.execute("SELECT coalesce(is_bot, 0) != 0 FROM user_agents WHERE id = ?",
                                    (agent_id,)).fetchone()
            if len(self._bots) >= _CACHE_LIMIT:
                self._bots.clear()
            bot = self._bots[agent_id] = row[0] if row is not None else 0
        return bot

    def _agent_id(self, conn: sqlite3.Connection, name: str) -> Optional[int]:
        """The id of a user agent, classified if it is not yet; None when it would be past the limit."""
        row = conn.execute("SELECT id, browser IS NULL, is_bot FROM user_agents WHERE name = ?", (name,)).fetchone()
        classifier = self.classifier
        if row is not None:
            if row[1] and classifier is not None:
                # Stored before schema version 2, or past a second's budget: fill in what is missing.
                classes = classifier.complete(name, row[2])
                if classes is not None:
                    conn.execute(agents.SET_CLASSES, (*classes, row[0]))
            return row[0]
        if classifier is None:
            return self._insert(conn, AGENTS, name, (name,))
        if name != BUCKET and self._full(AGENTS):
            return None  # checked before classifying: past the limit an agent costs no parse
        return self._insert(conn, AGENTS, name, (name, *classifier(name)), _AGENT_COLUMNS)

    def _insert(self, conn: sqlite3.Connection, table: str, name: str, values: tuple,
                columns: str = "name") -> Optional[int]:
        """Insert a value not found in its table and return its id; None past max_distinct_values."""
        if name != BUCKET and self._full(table):
            return None
        cursor = conn.execute(_insert_sql(table, columns, len(values)), values)
        if cursor.rowcount == 1:
            found = cursor.lastrowid
            if table in self._sizes:
                self._sizes[table] += 1
        else:
            found = conn.execute(f"SELECT id FROM [{table}] WHERE name = ?", (name,)).fetchone()[0]
        return found

    def forget(self) -> None:
        """Drop every cached id: after a rollback, or when the file was replaced."""
        self._ids.clear()
        self._sizes.clear()
        self._bots.clear()

    def _full(self, table: str) -> bool:
        """Whether a lookup table holds max_distinct_values values, when that is set.

        Counted, not read off max(id): retention deletes values no row uses, which frees room.
        Values other processes add meanwhile are seen at the next forget() (a rollback, a prune).
        """
        return self.max_distinct_values is not None and self._size(table) >= self.max_distinct_values

    def _size(self, table: str) -> int:
        size = self._sizes.get(table)
        if size is None:
            size = self._sizes[table] = self.conn.execute(f"SELECT count(*) FROM [{table}]").fetchone()[0]
        return size
