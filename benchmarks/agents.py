"""What classifying a new user agent costs, and whether a flood of unique agents slows logging.

    .venvs/datasette-1.0/bin/python benchmarks/agents.py [--rows 10000] [--rounds 5] [--parts build,classify,writer,app]
                                                         [--instructions]

Parts (the machine is shared and has 2 cores: wall-clock figures move by 10-25% between runs, so
each compares variants side by side, rounds interleaved, medians; --instructions adds valgrind's
counts, which do not move):
  build      a fresh process per sample: import ua-parser, build its matcher (agents.prepare), the
             first classify(); and the longest pause a thread ticking every 0.5 ms saw meanwhile
             (the GIL held by the matcher's Rust constructor)
  classify   microseconds per new agent after warm-up: agents.classify() of agents never seen
  writer     Writer._write on batches of 1,000 records, as the writer thread calls it: rows per
             second of its CPU time, for
               repeated       one agent on every row (the plain path: caches, no lookup, no parse)
               unique         a new agent on every row, classified as its row is created: ua-parser
                              for the first 1,000 of each second, the bot flag alone past that
               unique-inline  the same with no budget: ua-parser for every new agent
               unique-off     a new agent on every row, classification switched off
               past-limit     new agents once user_agents holds max_distinct_values: "(other)"
  app        the hello-world app through AsgiLogToSqlite, called in-process on one event loop, the
             writer thread running beside it: requests/s from the first request until the last row
             is committed, the process's CPU per request (the writer's included) and the loop
             thread's; the same variants
  --instructions  valgrind: instructions per classify() and per flag_only() of a new agent, and per
             written row with a new agent each: parsed, flagged only (past the budget) and with
             classification off (each a run with N minus a run with 0, over N)
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from asgi_log_to_sqlite import agents  # noqa: E402

VARIANTS = ("repeated", "unique", "unique-inline", "unique-off", "past-limit")
BATCH = 1_000
LIMIT = 1_000  # max_distinct_values of the past-limit variant
# Agents as real traffic has them; a counter in the version makes each one new.
TEMPLATES = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.{n}.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{n} Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/{n} Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.{n}.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Android 14; Mobile; rv:125.{n}) Gecko/125.0 Firefox/125.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.{n}) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html) {n}",
    "python-requests/2.{n}.0",
    "curl/8.{n}.0",
    "Mozilla/5.0 (compatible; scanner-{n}; +http://example.com/)",
)
REPEATED = TEMPLATES[0].format(n=0)


def unique_agents(count: int, start: int) -> list:
    """``count`` agents, each new (numbered from ``start``)."""
    return [TEMPLATES[i % len(TEMPLATES)].format(n=i) for i in range(start, start + count)]


def scope(agent: str, i: int) -> dict:
    """A scope as a server builds one: every header name and value a new bytes object."""
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", agent.encode("latin-1")),
               (b"accept", b"text/html"), (b"accept-language", b"en-GB,en;q=0.9")]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": f"/page/{i % 50}", "raw_path": b"", "query_string": b"", "root_path": "",
            "headers": [(bytes(bytearray(n)), bytes(bytearray(v))) for n, v in headers],
            "client": ("127.0.0.1", 40000 + i % 1000), "server": ("127.0.0.1", 8000)}


class Counter:
    """Numbers for new agents, never reused within a run."""

    def __init__(self):
        self.next = 1_000_000

    def take(self, count: int) -> int:
        start, self.next = self.next, self.next + count
        return start


def agents_for(variant: str, rows: int, numbers: Counter) -> list:
    if variant == "repeated":
        return [REPEATED] * rows
    return unique_agents(rows, numbers.take(rows))


# ---- build and classify ----------------------------------------------------------------------
def build_child() -> None:
    """In a fresh process: import and build times, the first call, and the longest pause of a ticker."""
    gaps = []
    stop = threading.Event()

    def tick():
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.0005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.02)
    t0 = time.perf_counter()
    import ua_parser  # noqa: F401
    t1 = time.perf_counter()
    agents.prepare()
    t2 = time.perf_counter()
    agents.classify(REPEATED)
    t3 = time.perf_counter()
    time.sleep(0.02)
    stop.set()
    ticker.join()
    print(json.dumps({"import_ms": (t1 - t0) * 1e3, "build_ms": (t2 - t1) * 1e3, "first_ms": (t3 - t2) * 1e3,
                      "longest_pause_ms": max(gaps) * 1e3}))


def classify_us(count: int, numbers: Counter) -> float:
    """Microseconds per classify() of a new agent, the matcher built and warmed up."""
    agents.prepare()
    for agent in unique_agents(200, numbers.take(200)):
        agents.classify(agent)
    batch = unique_agents(count, numbers.take(count))
    t0 = time.perf_counter()
    for agent in batch:
        agents.classify(agent)
    return (time.perf_counter() - t0) / count * 1e6


# ---- the writer ------------------------------------------------------------------------------
def writer_sample(variant: str, rows: int, numbers: Counter, tmp: str) -> float:
    """Rows per CPU second of Writer._write (this thread's CPU time, which other processes on the
    machine disturb less than the wall clock) for ``rows`` records of ``variant``, in a fresh file."""
    from asgi_log_to_sqlite.record import Shaper
    from asgi_log_to_sqlite.writer import Writer

    path = os.path.join(tempfile.mkdtemp(dir=tmp), "log.db")
    writer = Writer(path, max_distinct_values=LIMIT if variant == "past-limit" else None)
    switch(writer, variant)
    shaper = Shaper()
    t0 = time.perf_counter()

    def records(names, offset):
        return [(shaper, scope(name, offset + i), t0, t0 + 0.001, t0 + 0.0005, 200,
                 [(b"content-type", b"text/plain")], 13, 0, 0) for i, name in enumerate(names)]

    # Schema, the repeated agent and every INSERT size first; past-limit also fills user_agents.
    warm = [REPEATED] * (2 * 64 - 1)
    if variant == "past-limit":
        warm += unique_agents(LIMIT, numbers.take(LIMIT))
    for start in range(0, len(warm), BATCH):
        write(writer, records(warm[start:start + BATCH], start))
    batches = [records(names, 0) for names in chunks(agents_for(variant, rows, numbers), BATCH)]
    started = time.thread_time()
    for batch in batches:
        error = write(writer, batch)
        if error is not None:
            raise error
    elapsed = time.thread_time() - started
    if variant != "repeated":
        check_classes(writer, variant)
    writer._conn.close()  # written without its thread, which would close it
    return rows / elapsed


def switch(writer, variant: str) -> None:
    """Classification off, or with no budget, for the variants that say so."""
    if variant == "unique-off":
        writer.lookups.classifier = None
    elif variant == "unique-inline":
        writer.lookups.classifier = agents.Classifier(per_second=None)


def check_classes(writer, variant: str) -> None:
    """The variant did what it says: new agents classified, or not, or bucketed."""
    conn = writer._conn
    unclassified = conn.execute("SELECT count(*) FROM user_agents WHERE browser IS NULL").fetchone()[0]
    total = conn.execute("SELECT count(*) FROM user_agents").fetchone()[0]
    flagged = conn.execute("SELECT count(*) FROM user_agents WHERE is_bot IS NULL AND name != '(other)'").fetchone()[0]
    if variant.startswith("unique") and variant != "unique-off" and flagged:
        sys.exit(f"{variant}: {flagged} of {total} agents have no bot flag")
    if variant == "unique-inline" and unclassified:
        sys.exit(f"unique-inline: {unclassified} of {total} agents were not classified")
    if variant == "unique-off" and unclassified != total:
        sys.exit(f"unique-off: {total - unclassified} agents were classified")
    if variant == "past-limit" and total > LIMIT + 1:
        sys.exit(f"past-limit: {total} agents stored, expected at most {LIMIT} and '(other)'")


def write(writer, batch: list):
    """Writer._write of one batch: the error, or None (revisions with dated files pass wall_offset)."""
    if "wall_offset" in inspect.signature(writer._write).parameters:
        return writer._write(batch, time.time() - time.perf_counter())
    return writer._write(batch)


def chunks(items: list, size: int) -> list:
    return [items[start:start + size] for start in range(0, len(items), size)]


# ---- the app ---------------------------------------------------------------------------------
def app_sample(variant: str, requests: int, numbers: Counter, tmp: str) -> tuple:
    """(requests/s until the last row is committed, the process's CPU µs per request, every thread
    and so the writer's work included, and the loop thread's CPU µs per request)."""
    from apps import hello
    from logger_inprocess import request_channel

    from asgi_log_to_sqlite import AsgiLogToSqlite

    path = os.path.join(tempfile.mkdtemp(dir=tmp), "log.db")
    warm = [REPEATED] * 20 + (unique_agents(LIMIT, numbers.take(LIMIT)) if variant == "past-limit" else [])
    # A queue that holds every request: in-process the loop outruns any writer, and a drop would
    # make the sample look faster.
    app = AsgiLogToSqlite(hello, path, max_distinct_values=LIMIT if variant == "past-limit" else None,
                          queue_size=len(warm) + requests + 1)
    switch(app.writer, variant)
    receive, send, statuses = request_channel()
    scopes = [scope(name, i) for i, name in enumerate(agents_for(variant, requests, numbers))]

    async def main():
        for i, name in enumerate(warm):
            await app(scope(name, i), receive, send)
        if not app.flush(60):
            sys.exit("warm-up: the writer did not flush")
        started, cpu, process_cpu = time.perf_counter(), time.thread_time(), time.process_time()
        for n, one in enumerate(scopes):
            await app(one, receive, send)
            if n % 100 == 0:
                await asyncio.sleep(0)  # a server yields to its loop between requests
        loop_cpu = time.thread_time() - cpu
        if not app.flush(60):
            sys.exit("the writer did not flush")
        elapsed = time.perf_counter() - started
        process_cpu = time.process_time() - process_cpu
        if app.writer.rows_written != len(warm) + requests:
            sys.exit(f"{variant}: {app.writer.rows_written} rows written of {len(warm) + requests}: {app.stats()}")
        return requests / elapsed, process_cpu / requests * 1e6, loop_cpu / requests * 1e6

    try:
        return asyncio.run(main())
    finally:
        app.writer.close()


# ---- valgrind --------------------------------------------------------------------------------
def instructions_child(what: str, count: int) -> None:
    """Under valgrind: ``count`` new agents classified, or written one per row (on or off)."""
    numbers = Counter()
    agents.prepare()
    for agent in unique_agents(200, numbers.take(200)):
        agents.classify(agent)
    if what in ("classify", "flag_only"):
        function = getattr(agents, what)
        for agent in unique_agents(count, numbers.take(count)):
            function(agent)
        return
    from asgi_log_to_sqlite.record import Shaper
    from asgi_log_to_sqlite.writer import Writer

    writer = Writer(os.path.join(tempfile.mkdtemp(), "log.db"))
    writer.lookups.classifier = {"row-off": None, "row-flag": agents.Classifier(per_second=0),
                                 "row-parsed": agents.Classifier(per_second=None)}[what]
    shaper = Shaper()
    t0 = time.perf_counter()
    names = unique_agents(BATCH + count, numbers.take(BATCH + count))
    records = [(shaper, scope(name, i), t0, t0 + 0.001, t0 + 0.0005, 200, [(b"content-type", b"text/plain")], 13, 0, 0)
               for i, name in enumerate(names)]
    for batch in chunks(records, BATCH):
        write(writer, batch)
    writer._conn.close()


def instructions(args: list, valgrind: str) -> int:
    done = subprocess.run(
        [valgrind, "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, str(HERE / "agents.py"), "--child", *args],
        env=dict(os.environ, PYTHONHASHSEED="0"), capture_output=True, text=True, cwd=ROOT)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or not found:
        sys.exit(f"valgrind run failed ({args}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_unit(what: str, count: int, valgrind: str) -> float:
    return (instructions([what, str(count)], valgrind) - instructions([what, "0"], valgrind)) / count


# ---- main ------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000, help="rows (and requests) per sample")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parts", default="build,classify,writer,app", help="which timed parts to run")
    parser.add_argument("--instructions", action="store_true", help="also count instructions with valgrind")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "build":
            return build_child()
        return instructions_child(args.child[0], int(args.child[1]))
    if args.rows % BATCH:
        sys.exit(f"--rows {args.rows}: expected a multiple of {BATCH}")

    import platform

    import ua_parser

    print(f"ua-parser {'.'.join(map(str, ua_parser.VERSION))} with {ua_parser.BestAvailableResolver.__module__}, "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs; timings are noisy on a shared machine")
    parts = set(args.parts.split(",")) - {""}
    unknown = parts - {"build", "classify", "writer", "app"}
    if unknown:
        sys.exit(f"--parts {args.parts}: unknown {', '.join(sorted(unknown))}; expected build, classify, writer, app")
    builds = []
    for _ in range(3 if "build" in parts else 0):
        done = subprocess.run([sys.executable, str(HERE / "agents.py"), "--child", "build"],
                              capture_output=True, text=True, check=True)
        builds.append(json.loads(done.stdout))
    if builds:
        print("Build, median of 3 fresh processes: " + ", ".join(
            f"{key} {statistics.median(b[key] for b in builds):.1f}" for key in builds[0]))

    numbers = Counter()
    if "classify" in parts:
        print(f"classify() of a new agent after warm-up: "
              f"{statistics.median(classify_us(2_000, numbers) for _ in range(args.rounds)):.1f} us "
              f"(median of {args.rounds})")

    tmp = tempfile.mkdtemp(prefix="agents-bench-")
    try:
        writer_rates = {v: [] for v in VARIANTS}
        app_rates = {v: [] for v in VARIANTS}
        app_cpu = {v: [] for v in VARIANTS}
        loop_cpu = {v: [] for v in VARIANTS}
        for _ in range(args.rounds if parts & {"writer", "app"} else 0):
            for variant in VARIANTS if "writer" in parts else ():
                writer_rates[variant].append(writer_sample(variant, args.rows, numbers, tmp))
            for variant in VARIANTS if "app" in parts else ():
                rate, cpu, loop = app_sample(variant, args.rows, numbers, tmp)
                app_rates[variant].append(rate)
                app_cpu[variant].append(cpu)
                loop_cpu[variant].append(loop)
        if "writer" in parts:
            report_writer(writer_rates, args)
        if "app" in parts:
            report_app(app_rates, app_cpu, loop_cpu, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if args.instructions:
        from servers import ensure_tool

        valgrind = ensure_tool("valgrind", "valgrind")
        count = 1_000
        print(f"Instructions (valgrind), {count:,} new agents:")
        for what in ("classify", "flag_only"):
            print(f"  {what + '()':22} {per_unit(what, count, valgrind):10,.0f} per agent", flush=True)
        rows = {what: per_unit(what, count, valgrind) for what in ("row-parsed", "row-flag", "row-off")}
        print(f"  row with a new agent   {rows['row-parsed']:10,.0f} parsed, {rows['row-flag']:,.0f} flagged only, "
              f"{rows['row-off']:,.0f} off (parsed adds {rows['row-parsed'] - rows['row-off']:,.0f}, "
              f"flagged only {rows['row-flag'] - rows['row-off']:,.0f})")


def report_writer(rates: dict, args) -> None:
    base = statistics.median(rates["repeated"])
    print(f"Writer._write, {args.rows:,} rows per sample in batches of {BATCH:,}, rows per CPU second, medians of "
          f"{args.rounds} interleaved rounds:")
    for variant in VARIANTS:
        rate = statistics.median(rates[variant])
        print(f"  {variant:13} {rate:10,.0f} rows/s  {1e6 / rate:6.1f} us/row  ({rate / base:.2f} x repeated)")
    off = statistics.median(rates["unique-off"])
    print("  against unique-off: " + ", ".join(
        f"{v} {statistics.median(rates[v]) / off:.2f}" for v in ("unique", "unique-inline")), flush=True)


def report_app(rates: dict, cpu: dict, loop: dict, args) -> None:
    base = statistics.median(rates["repeated"])
    print(f"Hello-world through AsgiLogToSqlite in-process, {args.rows:,} requests per sample, until committed, "
          f"medians of {args.rounds} interleaved rounds:")
    for variant in VARIANTS:
        rate = statistics.median(rates[variant])
        print(f"  {variant:13} {rate:10,.0f} requests/s ({rate / base:.2f} x repeated)   "
              f"CPU {statistics.median(cpu[variant]):5.1f} us/request, of which the loop's "
              f"{statistics.median(loop[variant]):4.1f}")
    print("  against unique-off: " + ", ".join(
        f"{v} {statistics.median(rates[v]) / statistics.median(rates['unique-off']):.2f} in requests/s, "
        f"{statistics.median(cpu['unique-off']) / statistics.median(cpu[v]):.2f} in CPU per request"
        for v in ("unique", "unique-inline")), flush=True)


if __name__ == "__main__":
    main()
