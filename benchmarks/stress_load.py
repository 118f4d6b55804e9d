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
import os
import pathlib
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def ensure_ab() -> str:
    found = shutil.which("ab")
    if found:
        return found
    subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "apache2-utils"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("ab") or sys.exit("ab (apache2-utils) is not installed and could not be installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(log_file: pathlib.Path | None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}")
    env.pop("BENCH_LOG_FILE", None)
    if log_file is not None:
        env["BENCH_LOG_FILE"] = str(log_file)
    process = subprocess.Popen(
        [str(pathlib.Path(sys.executable).parent / "uvicorn"), "apps:hello_app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--http", "httptools", "--loop", "asyncio"],
        env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.05)


def run_once(ab: str, processes: int, concurrency: int, requests: int, log_file: pathlib.Path | None) -> dict:
    servers = [start(log_file) for _ in range(processes)]
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
    ab = ensure_ab()
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
