"""CPU instructions per row the writer spends, counted by valgrind: a figure this machine's
noise cannot blur.

    python3 scripts/dev.py bench instructions [--against REV] [--rows 10000] [--requests 100]

Wall-clock rows/s on the 2-core development VM moves by 10 to 25% between identical runs; the
count of CPU instructions does not. The parts below are counted by callgrind only while the
measured steps run (each step is called from itertools.starmap, and --toggle-collect=starmap_next
counts what runs inside it), so start-up, imports, building the records, the schema and preparing
the statements are not counted at all: two identical runs on a quiet machine agree to within
about 150 instructions a row, where counting the whole process left about 1,000 of start-up's
noise at 5,000 rows. A loaded machine still moves the count by about 1% (the writer's hand-overs
of the GIL are timed), so compare figures from a quiet one. Each figure is the count of a run
writing N rows minus that of an identical run writing 0, over N. The records
are logger_inprocess's, built as a server builds them (every header a new bytes object), and the
writer is called directly, without its thread and queue, whose timing would vary the batches.

Parts:
  write   Writer._write on batches of 1,000: shaping and inserting, in one transaction each, and
          the rollup sums added to the tables once at the end (natively every 2 s: 5,000 rows
          are 2 s of 2,500 requests/s; --rows 1000 shows them added every batch)
  shape   Shaper.rows_into alone (row() per record where a revision has no rows_into)
  insert  the multi-row INSERTs of rows already shaped
  varied  write, with durations drawn from a lognormal (median 2 ms) and a status mix (200, 304,
          404, 500): a batch of 1,000 rows then has about 950 rollup groups where the parts above,
          with one duration and 200 paths, have about 200, so the rollups cost what they do live

Requests (--requests N, 100 is enough): the hello-world app called in-process without a server,
bare and logged, the writer flushed before the process ends. valgrind runs all threads on one
core, so a request's count includes the writer thread's work for it: "added" is what logging costs
per request in all, with every request a combination of values not seen before (the slow path).
valgrind runs the process about 50 times slower than natively, so what is timed in wall-clock
seconds (the writer's 0.05 s linger, the GIL's 5 ms switch interval) is stretched 50 times too:
batches then hold about as many rows, and threads switch about as often per instruction, as
natively. Datasette is not counted this way: its own count moves by 3% between identical runs
(its executor threads and timers), more than the logger's share.

Dividing by the machine's instructions per second gives rows/s: at 4 instructions per ns,
150,000 rows/s is 26,700 instructions per row.

--against REV counts a git revision too, checked out in a temporary worktree, in the same run.
valgrind is installed from Debian when missing.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import inspect
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
PARTS = ("write", "shape", "insert", "varied")
WARM_UP = 20  # requests before the measured ones, in both runs: imports, templates, first lookups
# valgrind runs the process about 50 times slower than natively; what is timed in wall-clock
# seconds is stretched by as much so that it happens as often per instruction as natively:
LINGER_UNDER_VALGRIND = 2.5  # the writer's linger, natively 0.05 s
SWITCH_INTERVAL_UNDER_VALGRIND = 0.25  # the GIL's switch interval, natively 0.005 s
ROLLUP_EVERY_S_UNDER_VALGRIND = 100.0  # how often the writer adds its rollup sums, natively 2 s
BATCH = 1_000


def child(part: str, rows: int, built: int) -> None:
    """Runs under valgrind, importing asgi_log_to_sqlite from the tree on PYTHONPATH: writes ``rows``
    of ``built`` records (the same records in the run with rows and the run with 0)."""
    sys.path.insert(1, str(HERE))
    from logger_inprocess import scope_for

    from asgi_log_to_sqlite import schema
    from asgi_log_to_sqlite import writer as writer_module
    from asgi_log_to_sqlite.record import Shaper

    from asgi_log_to_sqlite import rollups

    if hasattr(rollups, "ROLLUP_EVERY_S"):
        # Stretched as valgrind stretches time, so that the sums are added when this run says.
        rollups.ROLLUP_EVERY_S = ROLLUP_EVERY_S_UNDER_VALGRIND
    writer = writer_module.Writer(os.path.join(tempfile.mkdtemp(), "log.db"))
    shaper = Shaper()
    t0 = time.perf_counter()
    records = [(shaper, scope_for(i), t0, t0 + 0.001, t0 + 0.0005, 200, [(b"content-type", b"text/plain")], 13, 0, 0)
               for i in range(BATCH + built)]
    if part == "varied":
        import random

        draw = random.Random(14)
        records = []
        for i in range(BATCH + built):
            duration = draw.lognormvariate(math.log(0.002), 1.0)
            status = draw.choices((200, 304, 404, 500), (90, 5, 4, 1))[0]
            records.append((shaper, scope_for(i), t0, t0 + duration, t0 + duration / 2, status,
                            [(b"content-type", b"text/plain")], 13, 0, 0))
    # Since dated files, one clock offset is read per batch and handed to _write.
    takes_offset = "wall_offset" in inspect.signature(writer._write).parameters

    def write(batch):
        return writer._write(batch, time.time() - time.perf_counter()) if takes_offset else writer._write(batch)

    write(records[:BATCH])  # schema, every lookup value and the statements, in both runs
    assert writer.rows_written == BATCH, writer.counters.counted()
    conn = writer._conn
    batches = [records[start:start + BATCH] for start in range(BATCH, BATCH + rows, BATCH)]

    # Revisions before lookups.py kept the lookup ids in the writer itself.
    id_of = writer.lookups.id_of if hasattr(writer, "lookups") else writer._id_of

    def shaped(batch):
        plain, full = [], []
        if hasattr(shaper, "rows_into"):
            shaper.rows_into(batch, 0.0, id_of, plain, full, print)
        else:
            for record in batch:
                plain.extend(shaper.row(record, 0.0, id_of))
        return plain

    if part in ("write", "varied"):
        steps = [functools.partial(write, batch) for batch in batches]
        if hasattr(writer, "_add_tally"):
            # The rollup sums go to the tables every rollups.ROLLUP_EVERY_S, here once for the run:
            # in both runs, so that the difference is its share for the rows measured.
            steps.append(writer._add_tally)
        done = measured(steps)
        assert writer.rows_written == BATCH + rows
        # Each write returns its error (None), and the tally's addition True when it went in.
        assert done[:len(batches)] == [None] * len(batches) and all(done[len(batches):]), done[-3:]
    elif part == "shape":
        conn.execute("BEGIN IMMEDIATE")
        measured([functools.partial(shaped, batch) for batch in batches])
        conn.execute("ROLLBACK")
    else:
        conn.execute("BEGIN IMMEDIATE")
        flat = shaped(records[:BATCH])
        width = len(schema.COMMON_COLUMNS)
        statement_sizes, insert_sql, _ = insert_statements(writer_module, writer)

        def insert_batch():
            start = 0
            for count in statement_sizes(BATCH):
                conn.execute(insert_sql(count, schema.COMMON_COLUMNS), flat[start:start + count * width])
                start += count * width

        measured([insert_batch for _ in batches])
        conn.execute("COMMIT")


def measured(steps) -> list:
    """Call each step from itertools.starmap, and return what each returned: the parent's callgrind
    counts only what runs inside starmap_next (--toggle-collect), which nothing else in the child calls."""
    return list(itertools.starmap(lambda step: step(), [(step,) for step in steps]))


def insert_statements(writer_module, writer):
    """(statement_sizes, insert_sql, rows per statement), wherever the revision measured keeps them."""
    try:
        from asgi_log_to_sqlite import inserts
    except ImportError:  # revisions before inserts.py kept them in the writer
        return writer_module._statement_sizes, writer._insert_sql, writer_module._ROWS_PER_STATEMENT
    return inserts.statement_sizes, inserts.insert_sql, inserts.ROWS_PER_STATEMENT


def requests_child(variant: str, count: int, built: int) -> None:
    """Runs under valgrind: WARM_UP + ``count`` hello-world requests, bare or logged, out of
    WARM_UP + ``built`` scopes built first (the same in the run with count and the run with 0)."""
    import asyncio

    sys.path.insert(1, str(HERE))
    from apps import hello
    from logger_inprocess import request_channel, scope_for

    sys.setswitchinterval(SWITCH_INTERVAL_UNDER_VALGRIND)
    from asgi_log_to_sqlite import rollups

    if hasattr(rollups, "ROLLUP_EVERY_S"):
        rollups.ROLLUP_EVERY_S = ROLLUP_EVERY_S_UNDER_VALGRIND
    tmp = tempfile.mkdtemp()
    app = hello
    if variant == "logged":
        from asgi_log_to_sqlite import AsgiLogToSqlite
        from asgi_log_to_sqlite.writer import writer_for

        log_file = os.path.join(tmp, "log.db")
        writer_for(log_file, linger=LINGER_UNDER_VALGRIND)  # the middleware below shares this writer
        app = AsgiLogToSqlite(app, log_file)
    receive, send, statuses = request_channel()

    async def main():
        scopes = [scope_for(i) for i in range(WARM_UP + built)]
        for scope in scopes[:WARM_UP]:
            await app(scope, receive, send)
        primed = 0
        if variant == "logged":
            assert app.flush(60)
            # One batch of 2 x 64 - 1 rows prepares every INSERT size (64 + 32 + ... + 1), in both
            # runs: preparing is costly and would otherwise fall in whichever run meets a size first.
            from asgi_log_to_sqlite import writer as writer_module

            primed = 2 * insert_statements(writer_module, app.writer)[2] - 1
            now = time.perf_counter()
            for i in range(primed):
                app.writer.submit((app.shaper, scope_for(i), now, now, now, 200, None, 0, 0, 0))
            assert app.flush(60)
            before = app.writer.batches_written
        for scope in scopes[WARM_UP:WARM_UP + count]:
            await app(scope, receive, send)
        if variant == "logged":
            assert app.flush(60)
            assert app.writer.rows_written == WARM_UP + primed + count, app.stats()
            print(json.dumps({"batches": app.writer.batches_written - before}))

    asyncio.run(main())
    assert set(statuses) == {200}, statuses[:5]


def instructions(tree: pathlib.Path, child_args: list, valgrind: str) -> int:
    """The instructions of one child run: those inside measured()'s steps for the writer's parts,
    the whole process's for the requests (whose writer thread runs outside any step)."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
    if child_args[1] in PARTS:
        tool = ["--tool=callgrind", "--toggle-collect=starmap_next", "--callgrind-out-file=/dev/null"]
        counted = r"Collected\s*:\s*(\d+)"
    else:
        tool = ["--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
        counted = r"I\s+refs:\s+([\d,]+)"
    done = subprocess.run([valgrind, *tool, sys.executable, str(HERE / "instructions.py"), *child_args],
                          env=env, capture_output=True, text=True, cwd=tree)
    found = re.search(counted, done.stderr)
    if done.returncode != 0 or not found:
        sys.exit(f"valgrind run failed ({tree}, {child_args}):\n{done.stderr[-2000:]}")
    if done.stdout.strip():
        print(f"    ({' '.join(child_args[1:])}: {done.stdout.strip()})", flush=True)
    return int(found.group(1).replace(",", ""))


def per_unit(tree: pathlib.Path, child_args: list, count: int, valgrind: str) -> float:
    """Instructions per row or request: a run with ``count`` minus a run with 0, over ``count``."""
    measured = instructions(tree, [*child_args, str(count), str(count)], valgrind)
    return (measured - instructions(tree, [*child_args, "0", str(count)], valgrind)) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--against", metavar="REV", help="also count this git revision, in the same run")
    parser.add_argument("--requests", type=int, default=0, help="also count hello-world requests (100 is enough)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        *what, count, built = args.child
        if what[0] in PARTS:
            return child(what[0], int(count), int(built))
        return requests_child(what[1], int(count), int(built))
    if args.rows % BATCH:
        sys.exit(f"--rows {args.rows}: expected a multiple of {BATCH}")

    sys.path.insert(0, str(HERE))
    from servers import ensure_tool, revisions

    valgrind = ensure_tool("valgrind", "valgrind")
    with revisions(args.against) as trees:
        print(f"Writer, instructions per row (valgrind), {args.rows:,} rows in batches of {BATCH:,}:")
        for part in PARTS:
            counted = {name: per_unit(tree, ["--child", part], args.rows, valgrind) for name, tree in trees.items()}
            print(f"  {part:6} " + "   ".join(f"{name}: {n:,.0f}" for name, n in counted.items())
                  + (f"   (this tree / {args.against}: {counted['this tree'] / counted[args.against]:.3f})" if args.against else ""),
                  flush=True)
        if args.requests:
            print(f"Hello-world in-process, instructions per request (the writer's included), {args.requests} requests:")
            for name, tree in trees.items():
                bare, logged = (per_unit(tree, ["--child", "hello", variant], args.requests, valgrind)
                                for variant in ("bare", "logged"))
                print(f"  {name:12} bare {bare:9,.0f}   logged {logged:9,.0f}   added {logged - bare:9,.0f}", flush=True)


if __name__ == "__main__":
    main()
