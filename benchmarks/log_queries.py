"""Each ready-made query's time on a large log: the default range (7 days) and a 30-day one.

    python3 scripts/dev.py bench log_queries [--file FILE | --rows 10000000] [--runs 5] [--index]
        [--only NAME,NAME] [--path-prefix /api/] [--against REV]

Without ``--file``, a log of ``--rows`` rows over 30 days is generated first with
synthetic_log.make_log (minutes for 10,000,000 rows) in a temporary directory, and deleted after;
``--keep FILE`` writes it there instead and keeps it for the next run's ``--file``. Each query runs
``--runs`` times per range on one sqlite3 connection, as Datasette would run it (parameters as
text); the medians of the wall and of the CPU time are reported, with the rows returned and what
the query reads. The 30-day range is ``start`` 30 days before today (a bare date) up to now. The
file is read once beforehand, so that every run, the first included, finds it in the page cache.
``--index`` first creates the index on ``request_log.start_ms`` that docs/schema.md suggests.
``--only`` times only the queries named; ``--path-prefix`` passes a prefix to those that take one
(a blank one makes the site-wide queries read the site's totals, any other the detailed rollups).
``--against REV`` times the queries as they were at git revision REV beside today's, one run of
each in turn, so that both see the same load on a shared machine: a before and after table of
the CPU times.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from asgi_log_to_sqlite.datasette.queries import QUERIES  # noqa: E402

from synthetic_log import make_log  # noqa: E402

# docs/schema.md's optional index, which the raw-row queries use for their range when it exists.
INDEX = "CREATE INDEX IF NOT EXISTS idx_request_log_start_ms ON request_log (start_ms)"
RAW = ("last_requests",)
# The queries that read the top lists (toplists.py) and their tail; all but top_paths read raw rows with a prefix.
TOPLISTS = ("top_paths", "referrers", "referring_sites", "agents")


# The queries that read the site's totals when path_prefix is blank (docs/queries.md).
SITE = ("summary", "traffic_by_hour", "traffic_by_day", "status_over_time", "status_by_day", "latency_over_time",
        "latency_by_day", "bots_and_humans")


def reads(name: str, path_prefix: str = "") -> str:
    if name in SITE and not path_prefix:
        return "site totals"
    if name in TOPLISTS:
        return "top lists" if name == "top_paths" or not path_prefix else "raw rows"
    return "raw rows" if name in RAW else "visitor sets" if name == "visitors_by_day" else "rollups"


def timed(conn: sqlite3.Connection, sql: str, params: dict, runs: int):
    """(median wall seconds, median CPU seconds, rows returned) of ``runs`` runs of ``sql``.

    The CPU time is this process's: on a shared machine it moves less than the wall time.
    """
    wall, cpu, count = [], [], 0
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        count = len(conn.execute(sql, params).fetchall())
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return statistics.median(wall), statistics.median(cpu), count


def queries_at(revision: str) -> dict:
    """QUERIES as they were at git ``revision``, for a before and after table."""
    source = subprocess.run(["git", "show", f"{revision}:asgi_log_to_sqlite/datasette/queries.py"],
                            cwd=HERE.parent, check=True, capture_output=True, text=True).stdout
    # In the package, for its relative imports (of the working tree's modules: only queries.py is the revision's).
    namespace: dict = {"__name__": "asgi_log_to_sqlite.datasette.queries_at_revision",
                       "__package__": "asgi_log_to_sqlite.datasette"}
    exec(compile(source, f"{revision}:asgi_log_to_sqlite/datasette/queries.py", "exec"), namespace)
    return namespace["QUERIES"]


def answer(conn: sqlite3.Connection, sql: str, params: dict) -> list:
    """The rows of ``sql``, without summary's start and end, which a blank end sets to the moment it runs."""
    cursor = conn.execute(sql, params)
    keep = [n for n, column in enumerate(cursor.description) if column[0] not in ("start", "end")]
    return [[row[n] for n in keep] for row in cursor.fetchall()]


def compare(path: str, runs: int, before: dict, revision: str, only=(), path_prefix: str = "") -> None:
    """Median CPU time of each query at ``revision`` and now, run in turn on one connection, and
    whether both gave the same rows."""
    warm(path)
    month_start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 30 * 86_400))
    print(f"{path}: CPU ms, median of {runs} runs each, {revision} and now in turn; path_prefix {path_prefix!r}")
    print()
    print(f"| query | 7 days, {revision} | now | 30 days, {revision} | now | rows |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    conn = sqlite3.connect(path)
    try:
        for name, query in QUERIES.items():
            if (only and name not in only) or name not in before:
                continue
            blank = {param: "" for param in query["params"]}
            if "path_prefix" in blank:
                blank["path_prefix"] = path_prefix
            figures, same = [], True
            for params in (blank, dict(blank, start=month_start)):
                same = same and answer(conn, before[name]["sql"], params) == answer(conn, query["sql"], params)
                cpu = {"before": [], "now": []}
                for _ in range(runs):
                    for label, sql in (("before", before[name]["sql"]), ("now", query["sql"])):
                        cpu[label].append(timed(conn, sql, params, 1)[1])
                figures += [f"{statistics.median(cpu[label]) * 1000:,.0f} ms" for label in ("before", "now")]
            print(f"| `{name}` | {' | '.join(figures)} | {'the same' if same else 'DIFFERENT'} |", flush=True)
    finally:
        conn.close()


def warm(path: str) -> None:
    """Read the whole file once, so that the first timed run does not pay for the disk."""
    with open(path, "rb") as file:
        while file.read(1 << 24):
            pass


def report(path: str, runs: int, index: bool = False, only=(), path_prefix: str = "") -> None:
    conn = sqlite3.connect(path)
    try:
        if index:
            started = time.perf_counter()
            conn.execute(INDEX)
            print(f"{INDEX}: {time.perf_counter() - started:.1f} s")
        indexed = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'idx_request_log_start_ms'").fetchone()
        rows = conn.execute("SELECT count(*) FROM request_log").fetchone()[0]
        first, last = conn.execute("SELECT min(start_ms), max(start_ms) FROM request_log").fetchone()
        sizes = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                 for t in ("rollup_hourly", "rollup_daily", "rollup_traffic_hourly", "rollup_traffic_daily",
                           "rollup_routes_daily", "rollup_route_latency_daily")
                 if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (t,)).fetchone()}
    finally:
        conn.close()
    days = (last - first) / 86_400_000
    print(f"{path}: {rows:,} rows over {days:.1f} days, {os.path.getsize(path) / 1e6:,.0f} MB; "
          + "; ".join(f"{table} {count:,} rows" for table, count in sizes.items())
          + f"; {'with' if indexed else 'no'} index on start_ms; path_prefix {path_prefix!r}; median of {runs} runs, "
          f"SQLite {sqlite3.sqlite_version}")
    warm(path)
    month_start = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 30 * 86_400))
    print()
    print(f"| query | reads | 7 days (default) | CPU | rows | 30 days | CPU | rows |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    conn = sqlite3.connect(path)
    try:
        for name, query in QUERIES.items():
            if only and name not in only:
                continue
            blank = {param: "" for param in query["params"]}
            if "path_prefix" in blank:
                blank["path_prefix"] = path_prefix
            figures = []
            for params in (blank, dict(blank, start=month_start)):
                wall, cpu, count = timed(conn, query["sql"], params, runs)
                figures.append(f"{wall * 1000:,.0f} ms | {cpu * 1000:,.0f} ms | {count}")
            print(f"| `{name}` | {reads(name, path_prefix)} | {' | '.join(figures)} |", flush=True)
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", help="an existing log to query (else one is generated)")
    parser.add_argument("--keep", help="generate the log here and keep it")
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the generated log")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--index", action="store_true",
                        help="create docs/schema.md's index on request_log.start_ms first (kept in --file)")
    parser.add_argument("--only", default="", help="comma-separated query names to time (default: all)")
    parser.add_argument("--path-prefix", default="", help="path_prefix for the queries that take one")
    parser.add_argument("--against", metavar="REV", help="time the queries of git revision REV beside today's")
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - set(QUERIES))
    if unknown:
        parser.error(f"--only {args.only!r}: no query named {', '.join(unknown)}; expected some of {', '.join(QUERIES)}")
    if args.against and not args.file:
        parser.error(f"--against {args.against!r} compares on an existing log: give its --file too")
    if args.file and args.against:
        compare(args.file, args.runs, queries_at(args.against), args.against, only, args.path_prefix)
        return 0
    if args.file:
        report(args.file, args.runs, args.index, only, args.path_prefix)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        path = args.keep or os.path.join(scratch, "log.db")
        started = time.perf_counter()
        make_log(path, args.rows)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.0f} s")
        report(path, args.runs, args.index, only, args.path_prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
