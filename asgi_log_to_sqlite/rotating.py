"""Split one log into dated files: the periods a source has rows, rollups or counters in, one transfer each.

Each period's file gets a merging.Transfer of the source's rows whose start times lie in that
period's window, with the same ledger, id mapping and chunked transactions as a merge, so running
rotate again adds only what is new and a file a live writer already has is added to.
"""
from __future__ import annotations

import datetime
import os
import sqlite3
from typing import Dict, List, Optional, Tuple

from .merge_setup import MergeError, check_log, file_uri, has_table, prepare
from .merging import DAY_MS, HOUR_MS, LEGACY, Progress, Transfer
from .rotation import DatedPath, is_dated
from .route_summaries import TABLES as _SUMMARY_TABLES
from .toplists import TABLES as _TOPLIST_TABLES

_ROLLUP_TABLES = (("rollup_hourly", "rollup_daily", "rollup_traffic_hourly", "rollup_traffic_daily")
                  + _TOPLIST_TABLES + _SUMMARY_TABLES)


def rotate_file(source: str, pattern: str, progress: Optional[Progress] = None, *,
                remove_source: bool = False, chunk_rows: Optional[int] = None) -> List[dict]:
    """Split ``source`` into the dated files of ``pattern`` (rows by start time, UTC), one summary per file.

    Each file is a whole log: the lookups its rows use, its period's rollups, its share of the
    counters. Files that exist already (a live writer's) are added to. ``remove_source`` deletes the
    source afterwards, and only when every one of its rows reached a dated file.
    """
    check_log(source)
    if not is_dated(pattern):
        raise MergeError(f"{pattern!r}: no date directive; give a pattern such as logs/requests-%Y-%m.db")
    try:
        dated = DatedPath(pattern)
    except ValueError as error:
        raise MergeError(str(error)) from None
    if dated.period is None:
        raise MergeError(f"{pattern!r}: {{hostname}} alone names one file; add a date, as in logs/{{hostname}}-%Y-%m.db")
    periods = _periods(source, dated)
    for path, _ in periods:
        if os.path.exists(path) and os.path.samefile(path, source):
            raise MergeError(f"{pattern!r}: names the source {source} itself; rotate into other files")
    planned: list = []
    transfers = []
    for path, found in periods:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        prepare(path)
        transfers.append(Transfer(path, source, found["window"], chunk_rows, found["ids"], found["legacy"]).plan(planned))
    total = sum(transfer.pending for transfer in transfers)
    summaries = [{"file": transfer.destination, "first": _iso(transfer.window[0]), **transfer.run(progress, total)}
                 for transfer in transfers]
    if remove_source:
        _remove_rotated(source, dated)
    return summaries


def _periods(source: str, dated: DatedPath) -> List[Tuple[str, dict]]:
    """Every period the source has rows or counters in, oldest first: (file, {window, ids, legacy}).

    Rows are grouped in SQL by a unit that never straddles a period (the UTC day, or the period
    when it is shorter); only each group's first start time goes through DatedPath. ``ids`` and
    ``legacy`` are the (lowest, highest) ids of the period's rows, or None.
    """
    conn = sqlite3.connect(file_uri(source, "ro"), uri=True)
    try:
        low = conn.execute("SELECT min(start_ms) FROM request_log").fetchone()[0] or 0
        first, last = dated.bounds(low)
        unit = int(min(86_400_000, last - first))
        queries = {
            "ids": f"SELECT min(start_ms), min(id), max(id) FROM request_log GROUP BY start_ms / {unit}",
            "counters": f"SELECT min(first_ms), 0, 0 FROM log_counters WHERE first_ms IS NOT NULL GROUP BY first_ms / {unit}",
        }
        # Hours and days whose raw rows were pruned still have a file, for their rollups: any
        # rollup table may be the last to hold a period (the size budget deletes them in turn).
        for table in _ROLLUP_TABLES:
            if has_table(conn, "main", table):
                key, key_ms = ("hour", HOUR_MS) if table.endswith("hourly") else ("day", DAY_MS)
                queries[table] = f"SELECT min({key}) * {key_ms}, 0, 0 FROM {table} GROUP BY {key} * {key_ms} / {unit}"
        if has_table(conn, "main", LEGACY):
            queries["legacy"] = (f"SELECT min(start * 1000), min(rowid), max(rowid) FROM {LEGACY} "
                                 f"GROUP BY CAST(start * 1000 AS INTEGER) / {unit}")
        groups = [(kind, *row) for kind, query in queries.items() for row in conn.execute(query)]
    finally:
        conn.close()
    periods: Dict[str, dict] = {}
    for kind, start, lowest, highest in groups:
        path = dated.path_for(start)
        if path not in periods:
            first, last = dated.bounds(start)
            periods[path] = {"window": (int(first), int(last)), "ids": None, "legacy": None}
        if kind in ("ids", "legacy"):
            known = periods[path][kind]
            periods[path][kind] = (lowest, highest) if known is None else (min(known[0], lowest), max(known[1], highest))
    for found in periods.values():
        # A period with counters only still reads no rows: an empty id range.
        found["ids"] = found["ids"] or (1, 0)
    return sorted(periods.items(), key=lambda item: item[1]["window"])


def _remove_rotated(source: str, dated: DatedPath) -> None:
    """Delete the rotated source and its -wal/-shm, once the dated files hold every row it has now."""
    missing = 0
    for path, found in _periods(source, dated):
        if not os.path.exists(path):
            missing += 1
            continue
        transfer = Transfer(path, source, found["window"], None, found["ids"], found["legacy"]).plan([])
        missing += transfer.pending + transfer.pending_legacy
    if missing:
        raise MergeError(f"{source}: kept: {missing} of its rows are not in the dated files yet (is something still "
                         "writing it?); run rotate again, then remove it")
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(source + suffix)
        except FileNotFoundError:
            pass


def _iso(ms: float) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
