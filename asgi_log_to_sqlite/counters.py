"""What could not be logged, counted per reason: kept in memory, stored in ``log_counters``, warned once.

Two kinds of count meet here. The event loop bumps fixed keys of ``loop`` (a plain dict, the
cheapest thing it can touch); the writer thread counts its own reasons with ``count``. The thread
stores both in the same transaction as a batch (``persist``), and marks them stored only after
that transaction commits (``committed``): a failed COMMIT keeps them for the next try.
"""
from __future__ import annotations

import sqlite3
import sys
import time
from typing import Dict, Optional

# Reasons counted on the event loop: fixed keys, so the writer can copy the dict while it changes.
LOOP_REASONS = ("queue_full", "sampled_out", "excluded", "internal_error")
# Of those, the ones that lose a row (warned on stderr); the others are left out on purpose.
_LOOP_DROPS = frozenset({"queue_full", "internal_error"})

_UPSERT = (
    "INSERT INTO log_counters (reason, count, first_ms, last_ms, last_error) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count, last_ms = excluded.last_ms, "
    "last_error = coalesce(excluded.last_error, last_error)"
)


class Counters:
    def __init__(self, path: str, bucketed_warning: str):
        self.path = path
        self.bucketed_warning = bucketed_warning  # what "bucketed" means, said once on stderr
        self.loop: Dict[str, int] = dict.fromkeys(LOOP_REASONS, 0)
        self._persisted_loop: Dict[str, int] = dict.fromkeys(LOOP_REASONS, 0)
        # Counted by the thread, not stored yet: reason -> [count, first_ms, last_ms, last_error]
        self._pending: Dict[str, list] = {}
        self.totals: Dict[str, int] = {}  # everything the thread counted, for stats()
        self._warned: set = set()

    def counted(self) -> Dict[str, int]:
        """Every count so far, stored or not, by reason."""
        counted = dict(self.totals)
        for reason, value in dict(self.loop).items():
            if value:
                counted[reason] = counted.get(reason, 0) + value
        return counted

    def changed(self) -> bool:
        """Whether anything counted is not stored yet."""
        return bool(self._pending or self._loop_deltas())

    def count(self, reason: str, count: int, error: Optional[BaseException] = None) -> None:
        """Count on the writer thread; the error's text is kept as the reason's last_error."""
        now_ms = int(time.time() * 1000)
        entry = self._pending.setdefault(reason, [0, now_ms, now_ms, None])
        entry[0] += count
        entry[2] = now_ms
        if error is not None:
            entry[3] = f"{type(error).__name__}: {error}"[:500]
        self.totals[reason] = self.totals.get(reason, 0) + count
        self._warn_once(reason, count, error)

    def persist(self, conn: sqlite3.Connection) -> Optional[Dict[str, int]]:
        """Add what is not stored yet to log_counters, inside the open transaction.

        Returns what to hand to ``committed`` once the transaction has committed.
        """
        deltas = self._loop_deltas()
        for reason in _LOOP_DROPS.intersection(deltas):
            self._warn_once(reason, deltas[reason])
        now_ms = int(time.time() * 1000)
        entries = [(reason, count, now_ms, now_ms, None) for reason, count in deltas.items()]
        entries += [(reason, c, first, last, err) for reason, (c, first, last, err) in self._pending.items()]
        if not entries:
            return None
        conn.executemany(_UPSERT, entries)
        return deltas

    def committed(self, deltas: Optional[Dict[str, int]]) -> None:
        """After the COMMIT that stored them, and only then: a failed commit keeps them pending."""
        if deltas is None:
            return
        for reason, delta in deltas.items():
            self._persisted_loop[reason] += delta
        self._pending.clear()

    def checkpoint(self) -> tuple:
        """The thread's counts as they are now, for ``restore`` after an attempt that rolled back."""
        return {reason: list(entry) for reason, entry in self._pending.items()}, dict(self.totals)

    def restore(self, checkpoint: tuple) -> None:
        pending, totals = checkpoint
        self._pending = {reason: list(entry) for reason, entry in pending.items()}
        self.totals = dict(totals)

    def report_unstored(self, failing: Optional[str]) -> None:
        """Stopping while the file cannot be written: say on stderr every count that is lost with it."""
        unstored = {reason: entry[0] for reason, entry in self._pending.items() if entry[0]}
        for reason, delta in self._loop_deltas().items():
            if reason in _LOOP_DROPS:
                unstored[reason] = unstored.get(reason, 0) + delta
        if unstored:
            listed = ", ".join(f"{reason}={count}" for reason, count in sorted(unstored.items()))
            print(f"asgi_log_to_sqlite: {self.path}: stopped while the file could not be written ({failing}); "
                  f"rows not written, and not stored in log_counters either: {listed}", file=sys.stderr, flush=True)

    def _loop_deltas(self) -> Dict[str, int]:
        now = dict(self.loop)
        return {r: now[r] - self._persisted_loop[r] for r in now if now[r] != self._persisted_loop[r]}

    def _warn_once(self, reason: str, count: int, error: Optional[BaseException] = None) -> None:
        if reason in self._warned:
            return
        self._warned.add(reason)
        if reason == "bucketed":
            print(f"asgi_log_to_sqlite: {self.path}: {self.bucketed_warning}", file=sys.stderr, flush=True)
            return
        detail = f" ({type(error).__name__}: {error})" if error else ""
        print(f"asgi_log_to_sqlite: {self.path}: {count} row(s) not written: {reason}{detail}; "
              "further drops are counted in its log_counters table", file=sys.stderr, flush=True)
