"""How long the writer keeps another thread waiting for the GIL while it drains a backlog.

    python3 scripts/dev.py bench gil_hold [--against REV] [--rows 20000] [--rounds 5]

An event loop under load is "another thread": while the writer runs Python, the loop cannot answer
a request. Here a ticker thread asks for the GIL every 0.2 ms (it sleeps, then wakes) and records how
late each wake-up was, while the writer drains ``--rows`` queued records of varied requests (a few
hundred paths and agents, as logger_inprocess builds them), counted from the moment the last record
is queued. The longest lateness is the longest stretch the writer held the GIL; Python forces a hand-over after ``sys.getswitchinterval()`` (5 ms),
so no stretch can be longer than that, plus the ticker's own wake-up.

Each round runs every variant in a fresh process, the order rotating; the report gives, per
variant, the median over rounds of the longest lateness, of the 99.9th percentile lateness, of how
many wake-ups were more than 1 ms late, and of the writer's rows/s during the drain.

"idle" is the ticker alone for as long as a drain takes, with no writer: the lateness the machine
itself adds (other processes, the scheduler). On a shared 2-core VM that floor is a few ms, so a
writer's figures mean something only beside it.

--one-batch: instead, Writer._write is called on one batch of 20,000 records whose combinations are
all cached (lognormal durations, so thousands of rollup groups), and the rollup sums are added, with
Python's forced switch put off to 1 s (sys.setswitchinterval), so that only what the writer itself
does lets the ticker (waking every 0.1 ms) in; prints the longest gap between its wake-ups, and the
longest stretch of the writer's own Python: from the end of one of its GIL releases (an SQL
statement, a hand-over) to the start of the next, timed around each. The ticker's gaps add its own
luck (a wake-up just after a hand-over waits for the next one); the stretches are the writer's alone.

--against REV runs a git revision too (a temporary worktree), in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from servers import revisions

HERE = pathlib.Path(__file__).resolve().parent


def child(rows: int) -> None:
    """Runs in a fresh process with the tree under test first on sys.path; prints one JSON result.

    ``rows`` 0: the ticker alone for IDLE_S seconds."""
    import threading
    import time

    if rows == 0:
        return idle_child()
    from asgi_log_to_sqlite.record import Shaper
    from asgi_log_to_sqlite.writer import Writer

    tmp = tempfile.mkdtemp()
    writer = Writer(os.path.join(tmp, "log.db"), queue_size=rows + 10)
    shaper = Shaper()
    t0 = time.perf_counter()

    def scope(i: int) -> dict:
        headers = [(b"host", b"bench"), (b"user-agent", f"agent-{i % 300}".encode()), (b"accept", b"*/*")]
        return {"type": "http", "method": "GET", "path": f"/page/{i % 500}", "query_string": b"",
                "headers": headers, "client": ("127.0.0.1", 5000 + i % 1000)}

    records = [(shaper, scope(i), t0, t0 + 0.001, t0 + 0.0005, 200, [(b"content-type", b"text/plain")], 13, 0, 0)
               for i in range(rows)]
    writer.submit(records[0])
    writer.flush(30)  # schema, statements and first lookups out of the way
    late = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            asked = time.perf_counter()
            time.sleep(0.0002)
            late.append((asked, time.perf_counter() - asked - 0.0002))

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.05)
    start = time.perf_counter()
    for record in records:
        writer.submit(record)
    # The submitting loop is Python of a third thread: wake-ups are counted from its end, the
    # writer's alone (it drains for much longer than the submitting takes).
    submitted = time.perf_counter()
    writer.flush(600)
    elapsed = time.perf_counter() - start
    stop.set()
    ticker.join()
    writer.close()
    print(json.dumps(summary([wait for asked, wait in late if asked >= submitted], rows / elapsed)))


IDLE_S = 0.3  # about as long as a drain of 20,000 records


def one_batch_child() -> None:
    import math
    import random
    import threading
    import time

    from logger_inprocess import scope_for

    from asgi_log_to_sqlite.record import Shaper
    from asgi_log_to_sqlite.writer import Writer

    writer = Writer(os.path.join(tempfile.mkdtemp(), "log.db"), batch_size=20_000)
    shaper = Shaper()
    t0 = time.perf_counter()
    draw = random.Random(14)
    # Lognormal durations (median 2 ms): thousands of rollup groups, as live traffic has.
    durations = [draw.lognormvariate(math.log(0.002), 1.0) for _ in range(21_000)]
    records = [(shaper, scope_for(i), t0, t0 + d, t0 + d / 2, 200, [(b"content-type", b"text/plain")], 13, 0, 0)
               for i, d in enumerate(durations)]
    writer._write(records[:1_000], 0.0)  # every combination cached, the statements prepared
    releases = _trace_releases(writer)
    ticks = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            time.sleep(0.0001)
            ticks.append(time.perf_counter())

    sys.setswitchinterval(1.0)
    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.02)
    start = time.perf_counter()
    writer._write(records[1_000:], 0.0)
    if hasattr(writer, "_add_tally"):
        writer._add_tally()  # the rollup sums, which a writer adds every 2 s
    end = time.perf_counter()
    stop.set()
    ticker.join()
    writer._conn.close()
    points = [start] + [t for t in ticks if start <= t <= end] + [end]
    held = [start] + [t for span in sorted(r for r in releases if start <= r[0] <= end) for t in span] + [end]
    print(json.dumps({"max_ms": max(b - a for a, b in zip(points, points[1:])) * 1000, "write_ms": (end - start) * 1000,
                      "python_ms": max(held[i + 1] - held[i] for i in range(0, len(held) - 1, 2)) * 1000}))


def _trace_releases(writer) -> list:
    """(start, end) of each GIL release the writer makes from now on: its statements (through a
    proxy of its connection) and its hand-overs. Parts a revision lacks are left untraced."""
    import time

    import asgi_log_to_sqlite.writer as module

    releases: list = []
    clock = time.perf_counter

    class Traced:
        def __init__(self, conn):
            self._conn = conn

        def __getattr__(self, name):
            return getattr(self._conn, name)

        def execute(self, *args):
            begun = clock()
            try:
                return self._conn.execute(*args)
            finally:
                releases.append((begun, clock()))

    traced = Traced(writer._conn)
    writer._conn = traced
    if hasattr(writer, "lookups"):
        writer.lookups.conn = traced
    hand_over = getattr(module, "hand_over", None)
    if hand_over is not None:
        def traced_hand_over() -> None:
            begun = clock()
            hand_over()
            releases.append((begun, clock()))

        module.hand_over = traced_hand_over
        if getattr(getattr(writer, "rollups", None), "hand_over", None) is not None:
            writer.rollups.hand_over = traced_hand_over
    return releases


def idle_child() -> None:
    import threading
    import time

    late = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            asked = time.perf_counter()
            time.sleep(0.0002)
            late.append(time.perf_counter() - asked - 0.0002)

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.05)
    late.clear()
    time.sleep(IDLE_S)
    stop.set()
    ticker.join()
    print(json.dumps(summary(late, 0.0)))


def summary(late: list, rows_per_s: float) -> dict:
    late.sort()
    return {"max_ms": late[-1] * 1000, "p999_ms": late[int(len(late) * 0.999)] * 1000,
            "over_1ms": sum(1 for wait in late if wait > 0.001), "rows_per_s": rows_per_s}


def run(tree: pathlib.Path, rows: int, extra: tuple = ()) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{HERE}")
    out = subprocess.run([sys.executable, __file__, "--child", str(rows), *extra], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", metavar="REV", help="also run this git revision, in the same run")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one-batch", action="store_true", help="one large batch, forced switch off (see above)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        one_batch_child() if args.one_batch else child(args.child)
        return
    if args.one_batch:
        with revisions(args.against) as trees:
            found = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    found[name].append(run(tree, 0, ["--one-batch"]))
        print(f"one batch of 20,000 cached records, forced switch put off to 1 s; medians of {args.rounds} rounds")
        for name, runs in found.items():
            print(f"  {name:12} longest gap between the ticker's wake-ups {statistics.median(r['max_ms'] for r in runs):7.2f} ms"
                  f"   longest stretch of the writer's Python {statistics.median(r['python_ms'] for r in runs):6.2f} ms"
                  f"   (the write took {statistics.median(r['write_ms'] for r in runs):.0f} ms)")
        return
    with revisions(args.against) as trees:
        names = ["idle"] + list(trees)
        results = {name: [] for name in names}
        for round_number in range(args.rounds):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                results[name].append(run(trees[name], args.rows) if name != "idle" else run(HERE.parent, 0))
    print(f"writer draining {args.rows:,} queued records beside a thread that wants the GIL every 0.2 ms; "
          f"switch interval {sys.getswitchinterval() * 1000:.0f} ms; medians of {args.rounds} rounds")
    print(f"  {'variant':12} {'longest wait ms':>16} {'p99.9 wait ms':>14} {'waits > 1 ms':>13} {'rows/s':>9}")
    for name, runs in results.items():
        print(f"  {name:12} {statistics.median(r['max_ms'] for r in runs):16.2f} "
              f"{statistics.median(r['p999_ms'] for r in runs):14.2f} {statistics.median(r['over_1ms'] for r in runs):13.0f} "
              f"{statistics.median(r['rows_per_s'] for r in runs):9.0f}")


if __name__ == "__main__":
    main()
