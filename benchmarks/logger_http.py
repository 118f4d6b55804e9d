"""Throughput and p99 under real uvicorn with wrk: bare, our logger, asgi-log-to-sqlite 0.1.1, uvicorn's access log.

    python3 scripts/dev.py bench logger_http [--rounds 5] [--seconds 5] [--connections 16]
                                             [--server httptools|standard] [--against REV]

Two apps: a hello-world and Datasette's table JSON (demo.db's numbers table, 50 rows). Each
variant is a fresh single-worker uvicorn process on 127.0.0.1; variants run interleaved, round by
round, the order rotating each round (A B C, B C A, C A B, ...); the report gives medians, ratios
of medians to bare, and "paired": the median of each round's ratio to that round's bare run.

  bare        no logging (uvicorn --no-access-log)
  ours        asgi_log_to_sqlite.AsgiLogToSqlite, file on disk under a temp dir
  old         asgi-log-to-sqlite 0.1.1 from PyPI, in .venvs/asgi-log-to-sqlite-0.1.1 (hello-world only:
              0.1.1 needs sqlite-utils 2.x, which Datasette cannot be installed beside)
  accesslog   uvicorn's own access log, to a file (stdout redirected), no SQLite
  before      with --against REV: our logger as it was at that git revision (a temporary worktree)

--server standard serves every variant as `pip install uvicorn[standard]` does, with httptools and
uvloop; the default is httptools on asyncio, the pinned figure docs/performance.md quotes.

Besides req/s and p99 it reports the server process's CPU time per request (all threads, from
/proc), which is steadier than req/s on a shared machine: "added" is what logging costs per request.

wrk must be installed (Debian: apt-get install wrk); the script installs it if missing and it can.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

from servers import PIN_LOAD, PIN_SERVER, ensure_tool, free_port, wait_listening

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
OLD_VENV = ROOT / ".venvs" / "asgi-log-to-sqlite-0.1.1"
PINNED_SERVER = True  # --server-anywhere turns it off
LOOP = "asyncio"  # --server standard: uvloop
BEFORE_TREE = None  # --against REV: the worktree holding that revision
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def ensure_old_venv() -> pathlib.Path:
    python = OLD_VENV / "bin" / "python"
    if not (OLD_VENV / "bin" / "uvicorn").exists():
        subprocess.run([sys.executable, "-m", "venv", str(OLD_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "asgi-log-to-sqlite==0.1.1", "uvicorn", "httptools", "httpx"], check=True)
    return python


def start_server(variant: str, app: str, workdir: pathlib.Path, db: pathlib.Path):
    port = free_port()
    env = dict(os.environ)
    if app == "datasette":
        env["BENCH_DB"] = str(db)
    bin_dir = pathlib.Path(sys.executable).parent
    env["PYTHONPATH"] = f"{HERE}{os.pathsep}{ROOT}"
    log_file = workdir / f"{variant}-{app}-{port}.db"
    access = ["--no-access-log"]
    stdout = subprocess.DEVNULL
    if variant in ("ours", "old", "before"):
        env["BENCH_LOG_FILE"] = str(log_file)
    if variant == "old":
        bin_dir = ensure_old_venv().parent
        env["PYTHONPATH"] = str(HERE)  # 0.1.1's asgi_log_to_sqlite, not ours
    if variant == "before":
        # Ahead of the editable install (whose finder comes last), so that revision's package is imported.
        env["PYTHONPATH"] = f"{HERE}{os.pathsep}{BEFORE_TREE}"
    if variant == "accesslog":
        access = ["--access-log", "--log-level", "info"]
        stdout = open(workdir / f"access-{port}.log", "w")
    # Same HTTP parser and loop for every variant (httptools, asyncio); the server on CPU 1 and wrk
    # on CPU 0, so the two do not trade places on one core between runs.
    process = subprocess.Popen(
        [*(PIN_SERVER if PINNED_SERVER else []), str(bin_dir / "uvicorn"), f"apps:{app}_app", "--host", "127.0.0.1", "--port", str(port),
         "--http", "httptools", "--loop", LOOP, *access],
        env=env, cwd=HERE, stdout=stdout, stderr=subprocess.STDOUT,
    )
    wait_listening(process, port, f"{variant} {app} server")
    return process, port


def cpu_ticks(pid: int) -> int:
    """User + system CPU ticks of every thread of a process (the loop and our writer thread)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def wrk(binary: str, port: int, path: str, seconds: int, connections: int):
    out = subprocess.run(
        [*PIN_LOAD, binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}{path}"],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, float(p99.group(1)) * scale, int(errors.group(1)) if errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--apps", default="hello,datasette")
    parser.add_argument("--server-anywhere", action="store_true",
                        help="let the server's threads run on either core (wrk stays on CPU 0): the writer "
                             "thread's SQLite work, done without the GIL, may then use the load generator's spare time")
    parser.add_argument("--server", choices=["httptools", "standard"], default="httptools",
                        help="standard: httptools and uvloop, as uvicorn[standard] runs (default: httptools on asyncio)")
    parser.add_argument("--against", metavar="REV", help="also run our logger as of this git revision (variant 'before')")
    parser.add_argument("--variants", help="comma-separated subset of the variants, for example bare,ours,before")
    args = parser.parse_args()
    global PINNED_SERVER, LOOP, BEFORE_TREE
    PINNED_SERVER = not args.server_anywhere
    LOOP = "uvloop" if args.server == "standard" else "asyncio"
    if args.against:
        BEFORE_TREE = pathlib.Path(tempfile.mkdtemp(prefix="bench-before-")) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(BEFORE_TREE), args.against], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    binary = ensure_tool("wrk", "wrk")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-http-"))
    db = workdir / "demo.db"
    subprocess.run([sys.executable, str(ROOT / "examples" / "datasette" / "make_demo_db.py"), str(db)],
                   check=True, stdout=subprocess.DEVNULL)
    plans = {
        "hello": ("/", ["bare", "ours", "old", "accesslog"]),
        "datasette": ("/demo/numbers.json?_size=50", ["bare", "ours", "accesslog"]),
    }
    if args.against:
        plans["hello"][1].insert(2, "before")
    results = {}
    for app in args.apps.split(","):
        path, variants = plans[app]
        if args.variants:
            variants = [v for v in variants if v in args.variants.split(",")]
        for round_number in range(args.rounds):
            # Rotate who goes first: a slot that is always first (or after the same neighbour)
            # picks up the machine's drift as if it were the variant's own cost.
            shift = round_number % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                process, port = start_server(variant, app, workdir, db)
                try:
                    wrk(binary, port, path, 1, args.connections)  # warm-up
                    ticks = cpu_ticks(process.pid)
                    rps, p99, errors = wrk(binary, port, path, args.seconds, args.connections)
                    cpu_us = (cpu_ticks(process.pid) - ticks) * TICK_US / max(rps * args.seconds, 1)
                    results.setdefault((app, variant), []).append((rps, p99, errors, cpu_us))
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(30)
        bare_rps = statistics.median(r[0] for r in results[(app, "bare")])
        bare_p99 = statistics.median(r[1] for r in results[(app, "bare")])
        where = "server on either core" if args.server_anywhere else "server on CPU 1"
        server = "uvicorn[standard] (httptools, uvloop)" if args.server == "standard" else "uvicorn httptools, asyncio"
        before = f", before = {args.against}" if args.against else ""
        print(f"\n{app} ({path}), {server}, wrk -t1 -c{args.connections} -d{args.seconds}s on CPU 0, {where}{before}, "
              f"{args.rounds} interleaved rounds, medians:")
        bare_cpu = statistics.median(r[3] for r in results[(app, "bare")])
        print(f"  {'variant':10} {'req/s':>10} {'ratio':>7} {'paired':>7} {'p99 ms':>8} {'p99 ratio':>9} {'CPU us/req':>10} {'added':>7}  non-2xx")
        for variant in variants:
            runs = results[(app, variant)]
            rps = statistics.median(r[0] for r in runs)
            p99 = statistics.median(r[1] for r in runs)
            cpu = statistics.median(r[3] for r in runs)
            # Each round's ratio to that round's bare run, so slow drift cancels out.
            paired = statistics.median(r[0] / b[0] for r, b in zip(runs, results[(app, "bare")]))
            print(f"  {variant:10} {rps:10.0f} {rps / bare_rps:7.3f} {paired:7.3f} {p99:8.2f} {p99 / bare_p99:9.2f} "
                  f"{cpu:10.1f} {cpu - bare_cpu:7.1f}  {sum(r[2] for r in runs)}")
        if app == "hello" and "ours" in variants:
            for log in workdir.glob("ours-hello-*.db"):
                import sqlite3
                conn = sqlite3.connect(log)
                rows = conn.execute("select count(*) from request_log").fetchone()[0]
                counted = conn.execute("select coalesce(sum(count), 0) from log_counters").fetchone()[0]
                conn.close()
                print(f"  ours: {log.name}: {rows} rows written, {counted} counted as not written")
    shutil.rmtree(workdir, ignore_errors=True)
    if BEFORE_TREE is not None:
        subprocess.run(["git", "worktree", "remove", "--force", str(BEFORE_TREE)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
