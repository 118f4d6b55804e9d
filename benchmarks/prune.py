"""A 1,000,000-row prune beside a served load: its longest write-lock hold, its time, and the serving p99.

    python3 scripts/dev.py bench prune [--rows 1000000] [--rate 400] [--seconds 10]

Each run generates a log of ``--rows`` rows with SQL (no HTTP: it takes about 2 s), with 20,000
paths, 2,000 agents, 5,000 addresses and 1,000 referers. Then one uvicorn process on CPU 1 serves
the hello-world app through AsgiLogToSqlite into that file, and h2load on CPU 0 sends numbered
requests at a fixed rate for ``--seconds``. Three runs, one after the other in one invocation:

  none    the rows started over 30 days, all over a day ago; nothing else happens (the control);
  cli     the same rows; after 2 s, ``asgi-log-to-sqlite prune FILE --keep-days 1`` runs in its own
          process (on CPU 0, beside the load generator) and deletes the million old rows;
  writer  the rows started within 10 ms, and turn a day old about 2 s into the load; the logger
          itself has keep_days=1 and prunes them from its own thread, between batches, in slices of
          retention.SLICE_S (on CPU 1, beside the event loop).

Reported: the prune's rows, transactions, longest write-lock hold (each transaction timed from
BEGIN IMMEDIATE's return to COMMIT's), its working time and wall time; the serving p99 over the
prune's window and over the whole run, against the control's same window. Checked: rows left +
rows pruned == rows built + requests sent, nothing in log_counters, integrity_check ok.
Timings on a shared 2-core machine are noisy: compare the runs of one invocation.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional, Tuple

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from asgi_log_to_sqlite import create_file, retention  # noqa: E402

from servers import PIN_LOAD, PIN_SERVER, fixed_rate_load, free_port, wait_listening  # noqa: E402
from stress_lock import p99  # noqa: E402

DAY_MS = 86_400_000
LEAD = 2.0  # seconds of load before the CLI prune starts


def build(path: pathlib.Path, rows: int, newest_ms: int, span_ms: int) -> float:
    """Generate a log of ``rows`` rows started over ``span_ms`` up to ``newest_ms``; returns the seconds it took."""
    started = time.perf_counter()
    create_file(str(path))
    first, span = newest_ms - span_ms, span_ms
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table, count, name in (("methods", 3, "char(71, 69, 84) || i"), ("paths", 20_000, "'/page/' || i"),
                                   ("query_strings", 20_000, "'q=' || i"), ("user_agents", 2_000, "'Agent/' || i"),
                                   ("referers", 1_000, "'https://ref' || i || '.example/'"),
                                   ("accept_languages", 50, "'en-' || i"), ("content_types", 5, "'text/t' || i"),
                                   ("client_ips", 5_000, "'10.0.' || (i / 256) || '.' || (i % 256)"),
                                   ("hosts", 2, "'host' || i")):
            conn.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) "
                         f"INSERT INTO {table} (name) SELECT {name} FROM n")
        conn.execute(f"""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
            INSERT INTO request_log (start_ms, duration_us, ttfb_us, method_id, path_id, query_string_id, user_agent_id,
                referer_id, accept_language_id, http_status, content_type_id, client_ip_id, host_id, body_size,
                request_size, flags, sample_rate)
            SELECT {first} + i * {span} / {rows}, abs(random() % 100000), abs(random() % 50000), 1 + abs(random()) % 3,
                1 + abs(random()) % 20000, CASE WHEN random() % 3 = 0 THEN 1 + abs(random()) % 20000 END,
                1 + abs(random()) % 2000, CASE WHEN random() % 2 = 0 THEN 1 + abs(random()) % 1000 END,
                1 + abs(random()) % 50, 200, 1 + abs(random()) % 5, 1 + abs(random()) % 5000, 1 + abs(random()) % 2,
                abs(random() % 20000), 0, 0, 1.0 FROM n""")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - started


async def hello(scope, receive, send):
    """apps.py's hello-world, without importing apps.py: that module logs at import, without keep_days."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


# The app uvicorn imports as "prune:app": the hello-world logged with the options in the environment.
def _app():
    log_file = os.environ.get("BENCH_LOG_FILE")
    if not log_file:
        return None
    from asgi_log_to_sqlite import AsgiLogToSqlite

    keep_days = os.environ.get("BENCH_KEEP_DAYS")
    return AsgiLogToSqlite(hello, log_file, keep_days=float(keep_days) if keep_days else None)


app = _app()


def serve(log_file: pathlib.Path, keep_days: Optional[float]) -> Tuple[subprocess.Popen, int]:
    """uvicorn (httptools, asyncio, one worker) on CPU 1 serving ``app`` above, as servers.start_hello does."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{HERE.parent}", BENCH_LOG_FILE=str(log_file))
    env.pop("BENCH_KEEP_DAYS", None)
    if keep_days is not None:
        env["BENCH_KEEP_DAYS"] = str(keep_days)
    process = subprocess.Popen(
        PIN_SERVER + [str(pathlib.Path(sys.executable).parent / "uvicorn"), "prune:app", "--host", "127.0.0.1",
                      "--port", str(port), "--no-access-log", "--http", "httptools", "--loop", "asyncio"],
        env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_listening(process, port)
    return process, port


def pruned_so_far(log_file: pathlib.Path) -> int:
    conn = sqlite3.connect(log_file)
    try:
        return retention.pruned_rows(conn)
    finally:
        conn.close()


def last_prune(log_file: pathlib.Path) -> Optional[dict]:
    conn = sqlite3.connect(log_file)
    try:
        row = conn.execute("SELECT value FROM log_meta WHERE key = ?", (retention.META_LAST,)).fetchone()
    finally:
        conn.close()
    return json.loads(row[0]) if row else None


def run(kind: str, log_file: pathlib.Path, built: int, rate: float, seconds: float, workdir: pathlib.Path) -> dict:
    process, port = serve(log_file, 1.0 if kind == "writer" else None)
    outcome: dict = {}
    started = time.time()
    loader = threading.Thread(target=lambda: outcome.update(zip(("sent", "latencies"),
                                                                 fixed_rate_load(port, rate, seconds, f"/{kind}", workdir))))
    loader.start()
    window = (LEAD, LEAD + 3.0)  # the control's: the same seconds of the run
    if kind == "cli":
        time.sleep(LEAD)
        began = time.time()
        done = subprocess.run(PIN_LOAD + [str(pathlib.Path(sys.executable).parent / "asgi-log-to-sqlite"), "prune",
                                          str(log_file), "--keep-days", "1", "--json"],
                              capture_output=True, text=True, check=True)
        report = json.loads(done.stdout)
        window = (began - started, time.time() - started)
        outcome["prune"] = {"rows": report["deleted"]["rows"], "transactions": report["work"]["transactions"],
                            "longest_hold_ms": report["work"]["longest_write_lock_ms"],
                            "seconds": report["work"]["seconds"], "wall": window[1] - window[0]}
    elif kind == "writer":
        # The rows turn a day old together, LEAD seconds into the load: the writer's prune starts then.
        began = summary = None
        while summary is None and time.time() - started < seconds:
            time.sleep(0.02)
            if began is None and pruned_so_far(log_file):
                began = time.time() - 0.02
            summary = last_prune(log_file)
        window = ((began or started) - started, time.time() - started)
        if summary is not None:
            outcome["prune"] = {"rows": summary["rows"], "transactions": summary["transactions"],
                                "longest_hold_ms": summary["longest_hold_ms"], "seconds": summary["seconds"],
                                "wall": window[1] - window[0]}
    loader.join()
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    conn = sqlite3.connect(log_file)
    try:
        rows = conn.execute("SELECT count(*) FROM request_log").fetchone()[0]
        lost = dict(conn.execute("SELECT reason, count FROM log_counters"))
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        pruned = retention.pruned_rows(conn)
    finally:
        conn.close()
    latencies = outcome["latencies"]
    errors = sum(1 for _, _, status in latencies if status >= 500) + outcome["sent"] - len(latencies)
    outcome.update(window=window, rows=rows, pruned=pruned, lost=lost, integrity=integrity, errors=errors,
                   exact=rows + pruned == built + outcome["sent"] and not lost and integrity == "ok" and errors == 0,
                   size_mb=os.path.getsize(log_file) / 2**20)
    return outcome


def in_window(latencies: list, window: Tuple[float, float]) -> list:
    return [latency for t, latency, _ in latencies if window[0] <= t < window[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=400, help="requests per second, fixed")
    parser.add_argument("--seconds", type=float, default=10, help="of load in each run")
    args = parser.parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="prune-"))
    results = {}
    for kind in ("none", "cli", "writer"):
        log_file = workdir / f"{kind}.db"
        if kind == "writer":
            # Within 10 ms of each other, a day old LEAD seconds after the load starts (the build
            # and the server's start take about 3 s of that).
            took = build(log_file, args.rows, int((time.time() + 3 + LEAD) * 1000) - DAY_MS, 10)
        else:
            took = build(log_file, args.rows, int(time.time() * 1000) - DAY_MS - 60_000, 30 * DAY_MS)
        print(f"{kind}: built {args.rows:,} rows ({os.path.getsize(log_file) / 2**20:.1f} MB) with SQL in {took:.1f} s; "
              f"load {args.rate:g} req/s for {args.seconds:g} s", flush=True)
        results[kind] = run(kind, log_file, args.rows, args.rate, args.seconds, workdir)
    control = results["none"]["latencies"]
    ok = True
    for kind, result in results.items():
        prune = result.get("prune")
        window = result["window"] if prune else results["cli"]["window"]
        line = (f"  {kind:6} p99 ms: whole run {p99([l for _, l, _ in result['latencies']]):6.1f}, "
                f"prune window {p99(in_window(result['latencies'], window)):6.1f} "
                f"(control's same window {p99(in_window(control, window)):6.1f})")
        if prune:
            line += (f"\n         prune: {prune['rows']:,} rows in {prune['transactions']} transactions, longest write-lock "
                     f"hold {prune['longest_hold_ms']:.1f} ms, working {prune['seconds']:.2f} s, wall {prune['wall']:.2f} s")
        elif kind != "none":
            line += "\n         prune: did not finish within the run"
            ok = False
        line += (f"\n         rows {result['rows']:,} + pruned {result['pruned']:,} = built + sent "
                 f"{args.rows + result['sent']:,}: {'yes' if result['exact'] else 'NO'}; counted {result['lost'] or 0}; "
                 f"5xx {result['errors']}; integrity {result['integrity']}; file {result['size_mb']:.1f} MB")
        print(line, flush=True)
        ok = ok and result["exact"]
    shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
