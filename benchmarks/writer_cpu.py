"""The writer's CPU time per row, measured, beside a git revision's: what instructions.py counts, in seconds.

    python3 scripts/dev.py bench writer_cpu [--against REV] [--rounds 9] [--rows 30000]

instructions.py counts CPU instructions, which this machine's noise cannot blur; but two versions
with the same count can take different times, when one runs Python's interpreter where the other
runs SQLite's C (fewer instructions per nanosecond: more branches and memory reads per
instruction). This measures the time itself: each round runs, in a fresh process per tree and
kind, Writer._write on ``--rows`` records in batches of 1,000 (as instructions.py builds them:
``write`` with one duration and 200 paths, ``varied`` with lognormal durations and a status mix),
and reads the process's CPU time around the writes and the rollup sums added once at the end.
Trees and kinds alternate within each round, so that what else loads the machine falls on all of
them alike. Reported: median and best µs per
row of each, and the ratio of medians to the revision.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
KINDS = ("write", "varied")
BATCH = 1_000


def child(kind: str, rows: int) -> None:
    """Runs in a fresh process with the tree measured first on sys.path: prints µs of CPU per row."""
    import math
    import random
    import tempfile
    import time

    sys.path.insert(1, str(HERE))
    from logger_inprocess import scope_for

    from asgi_log_to_sqlite import writer as writer_module
    from asgi_log_to_sqlite.record import Shaper

    writer = writer_module.Writer(os.path.join(tempfile.mkdtemp(), "log.db"))
    shaper = Shaper()
    t0 = time.perf_counter()
    draw = random.Random(14)
    records = []
    for i in range(BATCH + rows):
        duration, status = 0.001, 200
        if kind == "varied":
            duration = draw.lognormvariate(math.log(0.002), 1.0)
            status = draw.choices((200, 304, 404, 500), (90, 5, 4, 1))[0]
        records.append((shaper, scope_for(i), t0, t0 + duration, t0 + duration / 2, status,
                        [(b"content-type", b"text/plain")], 13, 0, 0))
    offset = time.time() - time.perf_counter()
    writer._write(records[:BATCH], offset)  # the schema, the lookup values and the statements
    started = time.process_time()
    for start in range(BATCH, BATCH + rows, BATCH):
        assert writer._write(records[start:start + BATCH], offset) is None
    if hasattr(writer, "_add_tally"):
        # The rollup sums a writer adds every 2 s (rollups.ROLLUP_EVERY_S): here once for the rows.
        assert writer._add_tally()
    print(json.dumps((time.process_time() - started) / rows * 1e6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", metavar="REV", help="also measure this git revision, in the same rounds")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))
    if args.rows % BATCH:
        sys.exit(f"--rows {args.rows}: expected a multiple of {BATCH}")

    sys.path.insert(0, str(HERE))
    from servers import revisions

    with revisions(args.against) as trees:
        found = {(name, kind): [] for name in trees for kind in KINDS}
        for _ in range(args.rounds):
            for kind in KINDS:
                for name, tree in trees.items():
                    done = subprocess.run([sys.executable, str(HERE / "writer_cpu.py"), "--child", kind, str(args.rows)],
                                          env=dict(os.environ, PYTHONPATH=str(tree)), cwd=tree,
                                          capture_output=True, text=True)
                    if done.returncode != 0:
                        sys.exit(f"{name} {kind} failed:\n{done.stderr[-2000:]}")
                    found[(name, kind)].append(json.loads(done.stdout))
        print(f"Writer CPU per row (µs), {args.rows:,} rows in batches of {BATCH:,}, {args.rounds} rounds:")
        for kind in KINDS:
            medians = {name: statistics.median(found[(name, kind)]) for name in trees}
            line = "   ".join(f"{name}: median {medians[name]:.2f}, best {min(found[(name, kind)]):.2f}" for name in trees)
            if args.against:
                line += f"   (this tree / {args.against}: {medians['this tree'] / medians[args.against]:.3f})"
            print(f"  {kind:6} {line}", flush=True)


if __name__ == "__main__":
    main()
