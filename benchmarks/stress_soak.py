"""Soak: a steady request rate for a long time; RSS, open files, WAL size and error counters stay flat.

    python3 scripts/dev.py bench stress_soak [--minutes 30] [--rate 300] [--plot soak.png]

One uvicorn process on CPU 1 serves the hello-world app through the logger. h2load on CPU 0
sends numbered requests (/soak/<n>) at a fixed rate over four connections. Every 10 s the script samples the
server's resident memory and open file descriptors other than sockets (from /proc), the size of the -wal file and
the log_counters table. At the end, after a graceful stop, every request must be a row or a
counted drop, with no number missing or logged twice. Flat means: after a warm-up (2 minutes by
default, while the capped lookup caches fill), every sample stays within +-10% of their median.
The curves go into a PNG drawn with matplotlib (installed into this virtualenv if missing).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import signal
import statistics
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

from servers import fixed_rate_load, start_hello

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
    process, port = start_hello(log_file, pinned=True)
    samples = []

    def on_tick(t, sent):
        row = sample(process.pid, log_file) if log_file.exists() else None
        if row:
            row.update(t=t, sent=sent)
            samples.append(row)
            print(f"{t / 60:6.1f} min  sent {sent:8}  RSS {row['rss_mb']:6.1f} MB  fds {row['fds']:3}  "
                  f"wal {row['wal_kb']:7.0f} KiB  counted {row['counted']}", flush=True)

    # h2load sends the numbered requests at a fixed rate from CPU 0 while this thread samples.
    load: dict = {}
    loader = threading.Thread(target=lambda: load.update(
        zip(("sent", "responses"), fixed_rate_load(port, args.rate, args.minutes * 60, "/soak", workdir))))
    started = time.monotonic()
    loader.start()
    next_tick = started + SAMPLE_EVERY
    while loader.is_alive():
        loader.join(max(0.0, next_tick - time.monotonic()))
        if loader.is_alive():
            next_tick += SAMPLE_EVERY
            t = time.monotonic() - started
            on_tick(t, int(min(t, args.minutes * 60) * args.rate))
    sent = load["sent"]
    answered = sum(1 for _, _, status in load["responses"] if status == 200)
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
