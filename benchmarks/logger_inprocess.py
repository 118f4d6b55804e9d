"""Event-loop cost per request and writer throughput of asgi_log_to_sqlite, against the bare app and 0.1.1.

    python3 scripts/dev.py bench logger_inprocess [--rounds 7] [--requests 20000]

Event-loop cost: each sample is a fresh process that calls the hello-world app directly
(no server, no sockets) N times on one asyncio loop and reports the CPU time of the loop's
thread per request (time.thread_time), so our writer thread's work is not counted against the
loop: that is the point of the design. Variants run interleaved (bare, ours, 0.1.1, bare, ...);
0.1.1 runs in its own virtualenv (.venvs/asgi-log-to-sqlite-0.1.1, created if missing).

Datasette: the table JSON of demo.db's numbers table called in-process, bare and logged, rounds
alternating; the process's CPU per request (every thread, so the writer's work counts), and the
throughput ratio that implies for a server bound by CPU.

Writer throughput: 200,000 prepared records pushed straight into our writer; rows/s until the
last is committed, alone and with a CPU-bound thread competing for the GIL (as a busy event loop does).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
OLD_VENV = ROOT / ".venvs" / "asgi-log-to-sqlite-0.1.1"

HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"),
    (b"accept", b"text/html,application/xhtml+xml"),
    (b"accept-language", b"en-GB,en;q=0.9"),
    (b"referer", b"http://127.0.0.1:8000/"),
]


def scope_for(i: int) -> dict:
    """A scope as a server builds one: every header name and value a new bytes object, as parsed."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": f"/page/{i % 200}", "raw_path": b"", "query_string": b"q=1"[:] if i % 3 == 0 else b"",
        "root_path": "", "headers": [(bytes(bytearray(n)), bytes(bytearray(v))) for n, v in HEADERS],
        "client": ("127.0.0.1", 40000 + i % 1000), "server": ("127.0.0.1", 8000),
    }


def sample(variant: str, n: int) -> float:
    """Loop-thread CPU microseconds per request, in this process."""
    sys.path.insert(0, str(HERE))
    from apps import hello

    app = hello
    tmp = tempfile.mkdtemp()
    if variant != "bare":
        from asgi_log_to_sqlite import AsgiLogToSqlite

        app = AsgiLogToSqlite(hello, os.path.join(tmp, "log.db"))
    scopes = [scope_for(i) for i in range(1000)]
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive():
        return request

    async def send(message):
        pass

    async def run(count):
        for i in range(count):
            await app(scopes[i % 1000], receive, send)

    asyncio.run(run(min(n, 2000)))  # warm up: imports, schema, first lookups
    if variant == "ours":
        app.flush()
    loop = asyncio.new_event_loop()
    try:
        cpu0 = time.thread_time()
        loop.run_until_complete(run(n))
        cpu = time.thread_time() - cpu0
    finally:
        loop.close()
    if variant == "ours":
        app.flush(60)
    return cpu / n * 1e6


# The table JSON of demo.db's numbers table, as a server would pass it.
DATASETTE_SCOPE = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
    "path": "/demo/numbers.json", "raw_path": b"/demo/numbers.json", "query_string": b"_size=50",
    "root_path": "", "headers": HEADERS, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
}


def request_channel():
    """``receive`` and ``send`` for calling an app in-process: every request has an empty body;
    ``send`` records each response's status in the list returned with them."""
    request = {"type": "http.request", "body": b"", "more_body": False}
    statuses = []

    async def receive():
        return request

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    return receive, send, statuses


def demo_datasette(tmp: str):
    """Datasette serving the example demo.db, created in ``tmp``."""
    from datasette.app import Datasette

    db = os.path.join(tmp, "demo.db")
    subprocess.run([sys.executable, str(ROOT / "examples" / "datasette" / "make_demo_db.py"), db],
                   check=True, stdout=subprocess.DEVNULL)
    return Datasette([db])


def datasette_sample(variant: str, n: int) -> float:
    """Process CPU microseconds (every thread: the loop and our writer) per Datasette table JSON
    request, the app called in-process; the writer's queue is flushed before the clock stops."""
    tmp = tempfile.mkdtemp()
    datasette = demo_datasette(tmp)
    app = datasette.app()
    if variant == "ds-ours":
        from asgi_log_to_sqlite import AsgiLogToSqlite

        app = AsgiLogToSqlite(app, os.path.join(tmp, "log.db"))
    scope = DATASETTE_SCOPE
    receive, send, statuses = request_channel()

    async def run(count):
        for _ in range(count):
            await app(dict(scope), receive, send)

    async def main():
        await datasette.invoke_startup()
        await run(200)  # warm-up: imports, templates, first lookups
        if variant == "ds-ours":
            app.flush()
        cpu0 = time.process_time()
        await run(n)
        if variant == "ds-ours":
            app.flush(60)
        return time.process_time() - cpu0

    cpu = asyncio.run(main())
    assert set(statuses) == {200}, statuses[:5]
    return cpu / n * 1e6


def child(variant: str, n: int) -> float:
    if variant == "old":
        python = ensure_old_venv()
        env = dict(os.environ, PYTHONPATH="")  # 0.1.1's module, not ours
        cwd = HERE
    else:
        python, env, cwd = pathlib.Path(sys.executable), dict(os.environ, PYTHONPATH=str(ROOT)), ROOT
    out = subprocess.run([str(python), str(HERE / "logger_inprocess.py"), "--sample", variant, "--requests", str(n)],
                         check=True, capture_output=True, text=True, env=env, cwd=cwd)
    return json.loads(out.stdout.strip().splitlines()[-1])["us"]


def ensure_old_venv() -> pathlib.Path:
    python = OLD_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(OLD_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "asgi-log-to-sqlite==0.1.1", "uvicorn", "httptools"], check=True)
    return python


def writer_throughput(rows: int, competing: bool) -> float:
    from asgi_log_to_sqlite.record import Record, Shaper
    from asgi_log_to_sqlite.writer import Writer

    tmp = tempfile.mkdtemp()
    writer = Writer(os.path.join(tmp, "log.db"), queue_size=rows + 10)
    shaper = Shaper()
    t0 = time.perf_counter()
    # Records as the middleware queues them for an HTTP request.
    records = [tuple.__new__(Record, (shaper, scope_for(i), t0, t0 + 0.001, t0 + 0.0005, 200,
                                      [(b"content-type", b"text/plain")], 13, 0, 0, None, None, None))
               for i in range(rows)]
    writer.submit(records[0])
    writer.flush(30)  # schema and first lookups out of the way
    stop = threading.Event()

    def burn():
        x = 0
        while not stop.is_set():
            x += 1

    burner = threading.Thread(target=burn)
    if competing:
        burner.start()
    start = time.perf_counter()
    for record in records:
        writer.submit(record)
    writer.flush(600)
    elapsed = time.perf_counter() - start
    stop.set()
    if competing:
        burner.join()
    writer.close()
    return rows / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--datasette-requests", type=int, default=1500)
    parser.add_argument("--sample", choices=["bare", "ours", "old", "ds-bare", "ds-ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sample:
        measure = datasette_sample if args.sample.startswith("ds-") else sample
        print(json.dumps({"us": measure(args.sample, args.requests)}))
        return

    variants = ["bare", "ours", "old"]
    samples = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            # 0.1.1 writes synchronously: fewer requests keep its samples short.
            samples[variant].append(child(variant, args.requests if variant != "old" else max(2000, args.requests // 10)))
    med = {v: statistics.median(s) for v, s in samples.items()}
    print(f"Event-loop CPU per request, hello-world called in-process, {args.rounds} interleaved rounds (medians):")
    for v, label in (("bare", "bare app"), ("ours", "asgi_log_to_sqlite (this)"), ("old", "asgi-log-to-sqlite 0.1.1")):
        added = "" if v == "bare" else f"   added {med[v] - med['bare']:7.2f} us"
        print(f"  {label:28} {med[v]:8.2f} us{added}   (samples: {', '.join(f'{x:.2f}' for x in samples[v])})")
    print(f"  0.1.1 added / ours added = {(med['old'] - med['bare']) / max(med['ours'] - med['bare'], 1e-9):.0f}x")

    # Datasette's table JSON, in-process: no sockets and no load generator, so the logger's share of
    # a heavier request shows without the noise of HTTP runs.
    ds = {"ds-bare": [], "ds-ours": []}
    for round_number in range(args.rounds):
        order = ["ds-bare", "ds-ours"] if round_number % 2 == 0 else ["ds-ours", "ds-bare"]
        for variant in order:
            ds[variant].append(child(variant, args.datasette_requests))
    bare_ds, ours_ds = statistics.median(ds["ds-bare"]), statistics.median(ds["ds-ours"])
    paired = statistics.median(b / o for b, o in zip(ds["ds-bare"], ds["ds-ours"]))
    print(f"Datasette table JSON (/demo/numbers.json?_size=50) in-process, process CPU per request (loop + writer), "
          f"{args.rounds} rounds, order alternating:")
    print(f"  bare {bare_ds:8.1f} us   (samples: {', '.join(f'{x:.0f}' for x in ds['ds-bare'])})")
    print(f"  ours {ours_ds:8.1f} us   (samples: {', '.join(f'{x:.0f}' for x in ds['ds-ours'])})")
    print(f"  added {ours_ds - bare_ds:.1f} us per request; throughput ratio if CPU-bound (bare / ours): "
          f"{bare_ds / ours_ds:.3f}, paired by round: {paired:.3f}")

    for competing in (False, True):
        rates = [writer_throughput(200_000, competing) for _ in range(3)]
        label = "with a CPU-bound thread competing" if competing else "alone"
        print(f"Writer, 200,000 rows, {label}: median {statistics.median(rates):,.0f} rows/s "
              f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")


if __name__ == "__main__":
    main()
