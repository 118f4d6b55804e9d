"""Another connection holds the log's write lock, or a long read transaction, under a steady load.

    python3 scripts/dev.py bench stress_lock [--holds 2,10,30,60] [--rate 300]

For each hold time H: one uvicorn process serves the hello-world app through the logger
(busy_timeout_ms 5000, the default). A client sends numbered requests at a steady rate for
H + 6 s; from second 3 to 3 + H another connection holds BEGIN IMMEDIATE on the file, so the
writer is slower than the arrivals for that long (queue full, then locked batches). Reported:
p99 latency before, during and after the hold, 5xx responses, rows + counted drops against
requests sent (must be equal), and whether rows arrive again after the hold.

Then the same with a reader holding a read transaction (as Datasette does while a page reads
the log) for the longest H: nothing may be dropped, and the -wal file's largest size is given.
"""
from __future__ import annotations

import argparse
import asyncio
import pathlib
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

from servers import start_hello
from stress_soak import drive

HERE = pathlib.Path(__file__).resolve().parent


def p99(values: list) -> float:
    return statistics.quantiles(values, n=100)[98] * 1000 if len(values) > 1 else float("nan")


def hold(log_file: pathlib.Path, seconds: float, kind: str, wal_sizes: list) -> None:
    conn = sqlite3.connect(log_file, isolation_level=None)
    try:
        if kind == "write":
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn.execute("BEGIN")
            conn.execute("select count(*) from request_log").fetchone()  # takes the read snapshot
        deadline = time.monotonic() + seconds
        wal = log_file.with_name(log_file.name + "-wal")
        while time.monotonic() < deadline:
            wal_sizes.append(wal.stat().st_size if wal.exists() else 0)
            time.sleep(0.1)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def scenario(kind: str, seconds: float, rate: float) -> bool:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="lock-"))
    log_file = workdir / "log.db"
    process, port = start_hello(log_file)
    latencies: list = []
    wal_sizes: list = []
    lead = 3.0
    holder = threading.Timer(lead, hold, args=(log_file, seconds, kind, wal_sizes))
    holder.start()
    sent, answered = asyncio.run(drive(port, rate, seconds + 2 * lead, lambda t, n: None, prefix="/lock",
                                       latencies=latencies))
    holder.join()
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    conn = sqlite3.connect(log_file)
    try:
        rows = conn.execute("select count(*) from request_log r join paths p on p.id = r.path_id "
                            "where p.name like '/lock/%'").fetchone()[0]
        after = conn.execute("select count(*) from request_log r join paths p on p.id = r.path_id "
                             "where p.name like '/lock/%' and r.start_ms > (select max(start_ms) - ? from request_log)",
                             (int(lead * 1000 / 2),)).fetchone()[0]
        counters = dict(conn.execute("select reason, count from log_counters"))
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    phases = {
        "before": [l for t, l, _ in latencies if t < lead],
        "during": [l for t, l, _ in latencies if lead <= t < lead + seconds],
        "after": [l for t, l, _ in latencies if t >= lead + seconds],
    }
    errors = sum(1 for _, _, status in latencies if status >= 500)
    dropped = sum(counters.values())
    ok = rows + dropped == sent and errors == 0 and integrity == "ok" and after > 0
    if kind == "read":
        ok = ok and dropped == 0
    label = f"{'write lock' if kind == 'write' else 'read txn'} {seconds:g} s"
    print(f"  {label:16} sent {sent:6} rows {rows:6} counted {dropped:6} {counters or ''}")
    print(f"  {'':16} p99 ms before {p99(phases['before']):6.1f} during {p99(phases['during']):6.1f} "
          f"after {p99(phases['after']):6.1f}; 5xx {errors}; rows after the hold {after}; integrity {integrity}"
          + (f"; -wal max {max(wal_sizes) / 1024:.0f} KiB" if wal_sizes else "")
          + f"  {'ok' if ok else 'FAILED'}", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holds", default="2,10,30,60")
    parser.add_argument("--rate", type=float, default=300)
    args = parser.parse_args()
    holds = [float(h) for h in args.holds.split(",")]
    print(f"steady {args.rate:g} req/s; rows + counted drops must equal requests sent")
    results = [scenario("write", h, args.rate) for h in holds]
    results.append(scenario("read", max(holds), args.rate))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
