"""Load on one log file from 1, 2 and 4 server processes: every request a row, nothing locked.

    python3 scripts/dev.py bench stress_load [--requests 20000] [--concurrency 1,16,64] [--processes 1,2,4]

For each process count and concurrency, the bare hello-world and the logged one run back to back
(bare, logged, bare, logged ...). Each process is an independent single-worker uvicorn (uvicorn
--workers adds about 40 ms per response on this machine, see the logger issue), all logging to one
fresh file. ApacheBench (ab, from Debian's apache2-utils; installed if missing) sends exactly
--requests requests, split evenly across the processes, with keep-alive. After a graceful stop
the file must hold exactly one row per request, an empty log_counters table (0 locked, 0 queue
full) and pass integrity_check and foreign_key_check. The report gives req/s and p99 (the worst
process's) against bare.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

from servers import ensure_tool, start_hello



def run_once(ab: str, processes: int, concurrency: int, requests: int, log_file: pathlib.Path | None) -> dict:
    servers = [start_hello(log_file) for _ in range(processes)]
    per_process = requests // processes
    per_concurrency = max(1, concurrency // processes)
    started = time.monotonic()
    loads = [subprocess.Popen([ab, "-q", "-k", "-n", str(per_process), "-c", str(per_concurrency),
                               f"http://127.0.0.1:{port}/load"], stdout=subprocess.PIPE, text=True)
             for _, port in servers]
    outputs = [load.communicate(timeout=600)[0] for load in loads]
    elapsed = time.monotonic() - started
    for process, _ in servers:
        process.send_signal(signal.SIGTERM)
    for process, _ in servers:
        process.wait(60)
    complete = sum(int(re.search(r"Complete requests:\s+(\d+)", o).group(1)) for o in outputs)
    failed = sum(int(re.search(r"Failed requests:\s+(\d+)", o).group(1)) for o in outputs)
    p99 = max(float(re.search(r"\s99%\s+(\d+)", o).group(1)) for o in outputs)
    result = {"rps": complete / elapsed, "p99": p99, "complete": complete, "failed": failed}
    if log_file is not None:
        conn = sqlite3.connect(log_file)
        try:
            result["rows"] = conn.execute("select count(*) from request_log").fetchone()[0]
            result["counters"] = conn.execute("select reason, count from log_counters").fetchall()
            result["integrity"] = conn.execute("PRAGMA integrity_check").fetchone()[0]
            result["foreign"] = conn.execute("PRAGMA foreign_key_check").fetchall()
        finally:
            conn.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--processes", default="1,2,4")
    args = parser.parse_args()
    ab = ensure_tool("ab", "apache2-utils")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="load-"))
    failures = 0
    print(f"{args.requests} requests per run (ab -k), hello-world, independent uvicorn processes on one log file")
    print(f"  {'procs':>5} {'conc':>5} {'bare req/s':>10} {'ours req/s':>10} {'ratio':>6} {'bare p99':>8} "
          f"{'ours p99':>8}  rows = requests, counters, integrity")
    for processes in map(int, args.processes.split(",")):
        for concurrency in map(int, args.concurrency.split(",")):
            bare = run_once(ab, processes, concurrency, args.requests, None)
            log_file = workdir / f"p{processes}-c{concurrency}.db"
            ours = run_once(ab, processes, concurrency, args.requests, log_file)
            ok = (ours["rows"] == ours["complete"] == (args.requests // processes) * processes
                  and not ours["counters"] and not ours["failed"] and ours["integrity"] == "ok" and not ours["foreign"])
            failures += not ok
            print(f"  {processes:>5} {concurrency:>5} {bare['rps']:10.0f} {ours['rps']:10.0f} "
                  f"{ours['rps'] / bare['rps']:6.2f} {bare['p99']:6.0f}ms {ours['p99']:6.0f}ms  "
                  f"{ours['rows']} = {ours['complete']}: {'yes' if ok else 'NO'}, {ours['counters'] or 'none'}, "
                  f"{ours['integrity']}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
