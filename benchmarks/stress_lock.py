"""Another connection holds the log's write lock, or a long read transaction, under a steady load.

    python3 scripts/dev.py bench stress_lock [--holds 8,30,120] [--rate 300] [--read-hold 30]

For each hold time H: one uvicorn process on CPU 1 serves the hello-world app through the logger
(busy_timeout_ms 5000, queue_size 10000: the defaults). h2load on CPU 0 sends numbered requests
at a fixed rate (four connections) for H + 6 s; from second 3 to 3 + H another connection holds
BEGIN IMMEDIATE on the file, so the writer holds its batch and retries it while the queue
fills. Reported: p99 latency before, during and after the hold, 5xx responses, rows and counted
drops against requests sent, the server's RSS before and at its largest during the hold, and the
drain time: from the lock's release until the newest row is less than a second old again.

Checked: rows + counted == sent, exactly; where the hold's arrivals fit in the queue
(rate x H < queue_size), nothing is counted at all; otherwise only queue_full is.

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
from typing import Optional

from servers import fixed_rate_load, start_hello

HERE = pathlib.Path(__file__).resolve().parent


def p99(values: list) -> float:
    return statistics.quantiles(values, n=100)[98] * 1000 if len(values) > 1 else float("nan")


QUEUE_SIZE = 10_000  # the logger's default, which benchmarks/apps.py keeps


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def caught_up_after(log_file: pathlib.Path, released: float, limit: float = 30.0) -> float:
    """Seconds from ``released`` until the newest row started less than a second ago."""
    conn = sqlite3.connect(log_file, isolation_level=None)
    try:
        while time.monotonic() - released < limit:
            newest = conn.execute("select max(start_ms) from request_log").fetchone()[0] or 0
            if time.time() * 1000 - newest < 1000:
                return time.monotonic() - released
            time.sleep(0.02)
    finally:
        conn.close()
    return float("nan")


def hold(log_file: pathlib.Path, seconds: float, kind: str, wal_sizes: list, pid: int = 0,
         measured: Optional[dict] = None) -> None:
    conn = sqlite3.connect(log_file, isolation_level=None)
    try:
        if kind == "write":
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn.execute("BEGIN")
            conn.execute("select count(*) from request_log").fetchone()  # takes the read snapshot
        deadline = time.monotonic() + seconds
        wal = log_file.with_name(log_file.name + "-wal")
        rss = []
        while time.monotonic() < deadline:
            wal_sizes.append(wal.stat().st_size if wal.exists() else 0)
            if pid:
                rss.append(rss_mb(pid))
            time.sleep(0.1)
        conn.execute("ROLLBACK")
        released = time.monotonic()
    finally:
        conn.close()
    if measured is not None:
        measured["rss_max"] = max(rss) if rss else float("nan")
        measured["drain"] = caught_up_after(log_file, released)


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
    measured: dict = {}
    time.sleep(0.5)
    rss_before = rss_mb(process.pid)
    holder = threading.Timer(lead, hold, args=(log_file, seconds, kind, wal_sizes, process.pid, measured))
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
    fits = kind == "read" or rate * seconds < QUEUE_SIZE
    exact = rows + dropped == sent and (dropped == 0 if fits else set(counters) == {"queue_full"})
    ok = exact and errors == 0 and integrity == "ok" and after > 0 and during <= allowed
    label = f"{'write lock' if kind == 'write' else 'read txn'} {seconds:g} s"
    print(f"  {label:16} sent {sent:6} rows {rows:6} counted {dropped:6} {counters or ''}")
    print(f"  {'':16} p99 ms before {p99(phases['before']):6.1f} during {p99(phases['during']):6.1f} "
          f"after {p99(phases['after']):6.1f}; 5xx {errors}; rows after the hold {after}; integrity {integrity}"
          + (f"; -wal max {max(wal_sizes) / 1024:.0f} KiB" if wal_sizes else "")
          + f"  {'ok' if ok else 'FAILED'}", flush=True)
    print(f"  {'':16} RSS MB before {rss_before:.1f}, largest during the hold {measured.get('rss_max', float('nan')):.1f}; "
          f"drained {measured.get('drain', float('nan')):.2f} s after the release"
          + ("" if exact else f"; NOT EXACT (expected {'nothing counted' if fits else 'only queue_full'})"), flush=True)
    print(f"  {'':16} normal (no hold): p99 ms before {normal['before']:6.1f} during {normal['during']:6.1f} "
          f"after {normal['after']:6.1f}; during the hold / allowed (1.1x) = {during:.1f} / {allowed:.1f}", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holds", default="8,30,120")
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--read-hold", type=float, default=30, help="seconds of the read transaction; 0 skips it")
    args = parser.parse_args()
    holds = [float(h) for h in args.holds.split(",")]
    print(f"steady {args.rate:g} req/s; rows + counted drops must equal requests sent")
    results = [scenario("write", h, args.rate) for h in holds]
    if args.read_hold:
        results.append(scenario("read", args.read_hold, args.rate))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
