"""kill -9 under load: what a crash loses, and that the file survives it. Also graceful stops.

    python3 scripts/dev.py bench stress_stop [--trials 30] [--clients 4] [--signal KILL|TERM|INT]

Each trial starts a fresh uvicorn process serving the hello-world app through the logger, all
trials logging to one file. Client threads send numbered requests (/t<trial>/<seq>) as fast as
they can; after a random 0.5-2.5 s the server gets SIGKILL. Then the file is checked:
PRAGMA integrity_check and foreign_key_check must pass, no request may be logged twice, and
lost = responses the clients received - rows logged for them. A crash can only lose what was
still queued or in the transaction being written, so the loss, divided by the request rate,
gives the loss window in milliseconds. Every trial after the first also shows that logging
continues in the same file after a crash.

With --signal TERM or INT the stop is graceful (uvicorn's shutdown, then lifespan shutdown, which
flushes the queue): nothing may be lost, and the report gives the time from the signal to the
process's exit, flush included.

With --server datasette-0.65 or datasette-1.0 the server is `datasette serve` of that line (from
.venvs/, as `scripts/dev.py test` creates them), with the logger configured through the
datasette-configure-asgi plugin; the numbered requests get Datasette's own 404 page, which is
logged like any other response.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import pathlib
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx

from servers import ROOT, free_port, start_hello, wait_listening



def start_datasette(line: str, log_file: pathlib.Path):
    """`datasette serve --memory` of one Datasette line, the logger configured through the plugin."""
    venv = ROOT / ".venvs" / f"datasette-{line}"
    if not (venv / "bin" / "datasette").exists():
        sys.exit(f"{venv} is missing: run `python3 scripts/dev.py test` once to create it")
    plugins = {"plugins": {"datasette-configure-asgi": [
        {"class": "asgi_log_to_sqlite.AsgiLogToSqlite", "args": {"file": str(log_file)}}]}}
    config = log_file.with_name("plugins.json")
    config.write_text(json.dumps(plugins))
    port = free_port()
    process = subprocess.Popen(
        [str(venv / "bin" / "datasette"), "serve", "--memory", "-c" if line.startswith("1") else "-m", str(config),
         "--port", str(port)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_listening(process, port, "datasette")
    return process, port


def trial(number: int, log_file: pathlib.Path, clients: int, sig: signal.Signals, server: str) -> dict:
    if server == "hello":
        process, port = start_hello(log_file)
    else:
        process, port = start_datasette(server.split("-", 1)[1], log_file)
    sequence = itertools.count()
    answered = [0] * clients
    stop = threading.Event()

    def client(slot: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            while not stop.is_set():
                try:
                    if http.get(f"/t{number}/{next(sequence)}").status_code < 500:
                        answered[slot] += 1
                except httpx.HTTPError:
                    return  # the server is gone

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(random.uniform(0.5, 2.5))
    process.send_signal(sig)
    killed_after = time.monotonic() - started
    process.wait(60)
    stop_seconds = time.monotonic() - started - killed_after
    stop.set()
    for thread in threads:
        thread.join(10)

    conn = sqlite3.connect(log_file)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        foreign = conn.execute("PRAGMA foreign_key_check").fetchall()
        logged, distinct = conn.execute(
            "select count(*), count(distinct p.name) from request_log r join paths p on p.id = r.path_id "
            "where p.name like ?", (f"/t{number}/%",)).fetchone()
    finally:
        conn.close()
    received = sum(answered)
    return {"integrity": integrity, "foreign": len(foreign), "received": received, "logged": logged,
            "duplicates": logged - distinct, "lost": max(0, received - logged), "rate": received / killed_after,
            "stop_seconds": stop_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--signal", choices=["KILL", "TERM", "INT"], default="KILL")
    parser.add_argument("--server", choices=["hello", "datasette-0.65", "datasette-1.0"], default="hello")
    args = parser.parse_args()
    sig = signal.Signals[f"SIG{args.signal}"]
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="kill9-"))
    log_file = workdir / "log.db"
    results = []
    for number in range(args.trials):
        result = trial(number, log_file, args.clients, sig, args.server)
        results.append(result)
        print(f"trial {number:2}: {result['received']:5} answered, {result['logged']:5} logged, "
              f"lost {result['lost']:4}, integrity {result['integrity']}, duplicates {result['duplicates']}",
              flush=True)
    lost = [r["lost"] for r in results]
    windows = [r["lost"] / r["rate"] * 1000 for r in results if r["rate"]]
    bad = [r for r in results if r["integrity"] != "ok" or r["foreign"] or r["duplicates"]]
    if sig != signal.SIGKILL:
        # A graceful stop loses nothing.
        bad += [r for r in results if r["lost"]]
        stops = [r["stop_seconds"] * 1000 for r in results]
        print(f"\n{args.trials} SIG{args.signal} trials under load, {args.server}, {args.clients} client threads, "
              f"median rate {statistics.median(r['rate'] for r in results):.0f} req/s:")
        print(f"  rows lost: {sum(r['lost'] for r in results)} in all; integrity ok in "
              f"{sum(r['integrity'] == 'ok' for r in results)}/{args.trials}")
        print(f"  signal to exit, flush included: median {statistics.median(stops):.0f} ms, max {max(stops):.0f} ms")
        sys.exit(1 if bad else 0)
    print(f"\n{args.trials} kill -9 trials, {args.clients} client threads, "
          f"median rate {statistics.median(r['rate'] for r in results):.0f} req/s:")
    print(f"  integrity_check ok and no foreign key errors or duplicates: {args.trials - len(bad)}/{args.trials}")
    print(f"  rows lost per crash: median {statistics.median(lost):.0f}, max {max(lost)}, "
          f"quartiles {statistics.quantiles(lost, n=4) if len(lost) > 1 else lost}")
    print(f"  loss window: median {statistics.median(windows):.0f} ms, max {max(windows):.0f} ms "
          f"(the writer gathers a batch for 50 ms, then writes it)")
    print(f"  logging continued in the same file after each crash: {all(r['logged'] > 0 for r in results[1:])}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
