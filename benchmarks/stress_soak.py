"""Soak: a steady request rate for a long time; RSS, open files, WAL size and error counters stay flat.

    python3 scripts/dev.py bench stress_soak [--minutes 30] [--rate 300] [--plot soak.png]

One uvicorn process serves the hello-world app through the logger. A client sends numbered
requests (/soak/<n>) at a steady rate, at most 32 in flight. Every 10 s the script samples the
server's resident memory and open file descriptors other than sockets (from /proc), the size of the -wal file and
the log_counters table. At the end, after a graceful stop, every request must be a row or a
counted drop, with no number missing or logged twice. Flat means: after a warm-up (2 minutes by
default, while the capped lookup caches fill), every sample stays within +-10% of their median.
The curves go into a PNG drawn with matplotlib (installed into this virtualenv if missing).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import signal
import statistics
import sqlite3
import subprocess
import sys
import tempfile
import time

import httpx

from servers import start_hello

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SAMPLE_EVERY = 10.0


def sample(pid: int, log_file: pathlib.Path) -> dict:
    with open(f"/proc/{pid}/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    # Files and pipes only: sockets come and go with the client's connections.
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds += not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    wal = log_file.with_name(log_file.name + "-wal")
    conn = sqlite3.connect(f"file:{log_file}?mode=ro", uri=True)
    try:
        counters = sum(c for (c,) in conn.execute("select count from log_counters"))
    finally:
        conn.close()
    return {"rss_mb": rss_kb / 1024, "fds": fds, "wal_kb": (wal.stat().st_size if wal.exists() else 0) / 1024,
            "counted": counters}


async def drive(port: int, rate: float, seconds: float, on_tick, prefix: str = "/soak",
                latencies: list | None = None) -> tuple[int, int]:
    """Send numbered requests (prefix/<n>) at ``rate`` per second for ``seconds``; return (sent,
    answered 200). With ``latencies``, append (seconds since start, latency, status) per response."""
    answered = 0
    in_flight = asyncio.Semaphore(32)
    tasks = set()

    async def one(client, n):
        nonlocal answered
        sent_at = time.monotonic()
        try:
            status = (await client.get(f"{prefix}/{n}")).status_code
            answered += status == 200
            if latencies is not None:
                latencies.append((sent_at - started, time.monotonic() - sent_at, status))
        finally:
            in_flight.release()

    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits) as client:
        started = time.monotonic()
        next_tick = started + SAMPLE_EVERY
        n = 0
        while (now := time.monotonic()) < started + seconds:
            due = started + n / rate
            if due > now:
                await asyncio.sleep(due - now)
            await in_flight.acquire()
            task = asyncio.create_task(one(client, n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
            if time.monotonic() >= next_tick:
                next_tick += SAMPLE_EVERY
                on_tick(time.monotonic() - started, n)
        await asyncio.gather(*tasks)
    return n, answered


def plot(samples: list, path: pathlib.Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t"] / 60 for s in samples]
    figure, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    for axis, key, label in zip(axes, ("rss_mb", "fds", "wal_kb", "counted"),
                                ("server RSS (MB)", "open files (not sockets)", "-wal size (KiB)", "drops counted")):
        axis.plot(minutes, [s[key] for s in samples], marker=".")
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--warmup", type=float, default=2, help="minutes left out of the flatness check")
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "results" / "soak.png"))
    args = parser.parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="soak-"))
    log_file = workdir / "log.db"
    process, port = start_hello(log_file)
    samples = []

    def on_tick(t, sent):
        row = sample(process.pid, log_file) if log_file.exists() else None
        if row:
            row.update(t=t, sent=sent)
            samples.append(row)
            print(f"{t / 60:6.1f} min  sent {sent:8}  RSS {row['rss_mb']:6.1f} MB  fds {row['fds']:3}  "
                  f"wal {row['wal_kb']:7.0f} KiB  counted {row['counted']}", flush=True)

    sent, answered = asyncio.run(drive(port, args.rate, args.minutes * 60, on_tick))
    process.send_signal(signal.SIGTERM)
    process.wait(60)

    conn = sqlite3.connect(log_file)
    try:
        numbers = [int(name.rsplit("/", 1)[1]) for (name,) in conn.execute(
            "select p.name from request_log r join paths p on p.id = r.path_id where p.name like '/soak/%'")]
        counted = sum(c for (c,) in conn.execute("select count from log_counters"))
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    missing = len(set(range(sent)) - set(numbers))
    duplicates = len(numbers) - len(set(numbers))

    # Flat means: every sample after the warm-up stays within +-10% of their median. The warm-up
    # (the first --warmup minutes) is when the lookup caches fill to their caps (every soak path
    # is new), which is growth to a ceiling, not a leak.
    settled = [s for s in samples if s["t"] >= args.warmup * 60] or samples
    print(f"\nsoak: {args.minutes:g} min at {args.rate:g} req/s: {sent} sent, {answered} answered 200, "
          f"{len(numbers)} logged, {missing} missing, {duplicates} duplicates, {counted} counted, integrity {integrity}")
    flat = True
    for key in ("rss_mb", "fds"):
        base = statistics.median(s[key] for s in settled)
        low, high = min(s[key] for s in settled), max(s[key] for s in settled)
        ok = base * 0.9 <= low and high <= base * 1.1
        flat &= ok
        print(f"  {key}: first sample {samples[0][key]:.1f}, after {args.warmup:g} min: median {base:.1f}, "
              f"range {low:.1f} to {high:.1f}: {'flat' if ok else 'NOT flat'} (+-10%)")
    print(f"  wal: max {max(s['wal_kb'] for s in samples):.0f} KiB")
    plot(samples, pathlib.Path(args.plot), f"asgi_log_to_sqlite soak: {args.rate:g} req/s for {args.minutes:g} min")
    print(f"  curves: {args.plot}")
    sys.exit(0 if flat and not missing and not duplicates and not counted and integrity == "ok" else 1)


if __name__ == "__main__":
    main()
