"""Another connection holds the log's write lock, or a long read transaction, under a steady load.

    python3 scripts/dev.py bench stress_lock [--holds 2,10,30,60] [--rate 300]

For each hold time H: one uvicorn process on CPU 1 serves the hello-world app through the logger
(busy_timeout_ms 5000, the default). h2load on CPU 0 sends numbered requests at a fixed rate
(four connections) for H + 6 s; from second 3 to 3 + H another connection holds BEGIN IMMEDIATE on the file, so the
writer is slower than the arrivals for that long (queue full, then locked batches). Reported:
p99 latency before, during and after the hold, 5xx responses, rows + counted drops against
requests sent (must be equal), and whether rows arrive again after the hold.

Then the same with a reader holding a read transaction (as Datasette does while a page reads
the log) for the longest H: nothing may be dropped, and the -wal file's largest size is given.

After each scenario the same load runs against the same logged app with no hold (a fresh file,
same timings): that is "normal". The p99 during the hold must stay within 1.1x of the larger of
normal's p99 in the same window and the scenario's own p99 before the hold, so that the
machine's noise in one window is not taken for the lock's effect.
"""
from __future__ import annotations

import argparse
import pathlib
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time

from servers import fixed_rate_load, start_hello

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


def phases_of(latencies: list, lead: float, seconds: float) -> dict:
    return {
        "before": [l for t, l, _ in latencies if t < lead],
        "during": [l for t, l, _ in latencies if lead <= t < lead + seconds],
        "after": [l for t, l, _ in latencies if t >= lead + seconds],
    }


def control(seconds: float, rate: float, lead: float = 3.0) -> dict:
    """p99 per phase of the logged app under the same load and timings, with nothing held."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="lock-control-"))
    process, port = start_hello(workdir / "log.db", pinned=True)
    try:
        _, latencies = fixed_rate_load(port, rate, seconds + 2 * lead, "/lock", workdir)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return {phase: p99(values) for phase, values in phases_of(latencies, lead, seconds).items()}


def scenario(kind: str, seconds: float, rate: float) -> bool:
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="lock-"))
    log_file = workdir / "log.db"
    process, port = start_hello(log_file, pinned=True)
    wal_sizes: list = []
    lead = 3.0
    holder = threading.Timer(lead, hold, args=(log_file, seconds, kind, wal_sizes))
    holder.start()
    sent, latencies = fixed_rate_load(port, rate, seconds + 2 * lead, "/lock", workdir)
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
    phases = phases_of(latencies, lead, seconds)
    normal = control(seconds, rate, lead)
    during = p99(phases["during"])
    allowed = 1.1 * max(normal["during"], p99(phases["before"]))
    # A request h2load sent but got no answer for counts as an error too.
    errors = sum(1 for _, _, status in latencies if status >= 500) + sent - len(latencies)
    dropped = sum(counters.values())
    ok = rows + dropped == sent and errors == 0 and integrity == "ok" and after > 0 and during <= allowed
    if kind == "read":
        ok = ok and dropped == 0
    label = f"{'write lock' if kind == 'write' else 'read txn'} {seconds:g} s"
    print(f"  {label:16} sent {sent:6} rows {rows:6} counted {dropped:6} {counters or ''}")
    print(f"  {'':16} p99 ms before {p99(phases['before']):6.1f} during {p99(phases['during']):6.1f} "
          f"after {p99(phases['after']):6.1f}; 5xx {errors}; rows after the hold {after}; integrity {integrity}"
          + (f"; -wal max {max(wal_sizes) / 1024:.0f} KiB" if wal_sizes else "")
          + f"  {'ok' if ok else 'FAILED'}", flush=True)
    print(f"  {'':16} normal (no hold): p99 ms before {normal['before']:6.1f} during {normal['during']:6.1f} "
          f"after {normal['after']:6.1f}; during the hold / allowed (1.1x) = {during:.1f} / {allowed:.1f}", flush=True)
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
