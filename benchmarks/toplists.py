"""What summing the top lists behind the writer costs: CPU per row and the write lock held per slice.

    python3 scripts/dev.py bench toplists [--rows 200000] [--rounds 5] [--slices 2000,5000,20000]
                                          [--log uniform|synthetic]

A log of ``--rows`` rows is built once with its watermark at 0: ``uniform``, started over the last
day with 20,000 paths, 2,000 agents and 1,000 referers drawn uniformly (prune.py's generator), so
that nearly every row is a new (hour, path): the dearest case; or ``synthetic``, the 30-day log
of synthetic_log.py that the query benchmarks use, whose paths and agents repeat as a site's do. Each round copies it once
per slice size, the order rotating, and brings the watermark to the end with
``toplists.catch_up_slice`` of that size, one BEGIN IMMEDIATE transaction per slice, on this
thread. Reported per slice size, medians over rounds: CPU microseconds per row (process time:
this is SQLite's work, done with the GIL released), and the longest transaction, which is how
long a live writer of the same file may wait for its lock. The writer's catch-up runs between
its batches, so what a request pays for it is the lock wait, never the CPU on the event loop.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from asgi_log_to_sqlite import toplists  # noqa: E402

from prune import build  # noqa: E402

DAY_MS = 86_400_000


def catch_up(path: pathlib.Path, slice_rows: int) -> tuple:
    """(CPU seconds, longest transaction in seconds, rows summed) to bring ``path``'s watermark to the end."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        cpu, longest, rows = time.process_time(), 0.0, 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            started = time.perf_counter()
            moved = toplists.catch_up_slice(conn, slice_rows)
            conn.execute("COMMIT")
            longest = max(longest, time.perf_counter() - started)
            rows += moved
            if moved < slice_rows:
                return time.process_time() - cpu, longest, rows
    finally:
        conn.close()


def conn_counts(path: pathlib.Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return ", ".join(f"{conn.execute(f'SELECT count(*) FROM {table}').fetchone()[0]:,} {table}"
                         for table in ("paths", "user_agents", "referers"))
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log", choices=("uniform", "synthetic"), default="uniform")
    parser.add_argument("--slices", default="2000,5000,20000",
                        help="slice sizes to compare, rows per transaction, comma-separated")
    args = parser.parse_args()
    slices = [int(size) for size in args.slices.split(",")]
    work = pathlib.Path(tempfile.mkdtemp(prefix="toplists-bench-"))
    try:
        built = work / "built.db"
        if args.log == "uniform":
            build(built, args.rows, int(time.time() * 1000), DAY_MS)
        else:
            from synthetic_log import make_log
            make_log(str(built), args.rows)
            conn = sqlite3.connect(built, isolation_level=None)
            for table in toplists.TABLES:
                conn.execute(f"DELETE FROM {table}")
            toplists.set_mark(conn, 0)
            conn.close()
        found = {size: [] for size in slices}
        for round_ in range(args.rounds):
            for size in slices[round_ % len(slices):] + slices[:round_ % len(slices)]:
                copy = work / f"copy-{size}.db"
                shutil.copy(built, copy)
                cpu, longest, rows = catch_up(copy, size)
                assert rows == args.rows, (rows, args.rows)
                found[size].append((cpu / rows * 1e6, longest * 1000))
                copy.unlink()
        listed = conn_counts(built)
        print(f"Top lists caught up over {args.rows:,} rows of the {args.log} log ({listed}), "
              f"medians of {args.rounds} rounds:")
        print(f"  {'rows per slice':>14}  {'CPU µs/row':>10}  {'longest slice, ms':>17}")
        for size in slices:
            per_row = statistics.median(cpu for cpu, _ in found[size])
            hold = statistics.median(ms for _, ms in found[size])
            print(f"  {size:>14,}  {per_row:>10.2f}  {hold:>17.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
