"""Bytes per request of a synthetic 30-day log: without rollups, with them, and after pruning.

    python3 scripts/dev.py bench storage [--against REV] [--requests 300000] [--keep-days 7]

The writer logs ``--requests`` records spread evenly over the last 30 days (their start times set in
the past), over 2,000 paths with a long tail, 300 agents (a tenth of them bots), 3,000 client
networks and a few statuses. Then, on this tree, retention prunes the rows older than
``--keep-days`` and gives the pages back (the rollups stay). Each file is measured after a
checkpoint, with its -wal truncated, as `du` would see it at rest.

--against REV measures a git revision too (for example one before rollups), in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import sqlite3
import subprocess
import sys
import tempfile

from servers import revisions

HERE = pathlib.Path(__file__).resolve().parent
DAYS = 30


def records(shaper, count: int, seed: int = 1):
    """Plain HTTP records, as the middleware queues them, spread over the last DAYS days."""
    import time

    rng = random.Random(seed)
    now = time.perf_counter()
    paths = [f"/page/{i}" for i in range(2_000)]
    agents = [f"Mozilla/5.0 (X11; Linux x86_64; rv:{100 + i}.0) Gecko/20100101 Firefox/{100 + i}.0".encode()
              for i in range(270)] + [f"ExampleBot/{i}.0 (+http://example.com/bot)".encode() for i in range(30)]
    for i in range(count):
        age = (count - i) / count * DAYS * 86_400
        start = now - age
        duration = rng.lognormvariate(-4.5, 1.0)
        path = paths[min(int(rng.paretovariate(1.2)) - 1, len(paths) - 1)]
        status = rng.choices((200, 304, 404, 500), (90, 5, 4, 1))[0]
        scope = {"type": "http", "method": "GET", "path": path, "query_string": b"",
                 "headers": [(b"host", b"example.com"), (b"user-agent", rng.choice(agents))],
                 "client": (f"10.{rng.randrange(12)}.{rng.randrange(250)}.7", 40000)}
        yield (shaper, scope, start, start + duration, start + duration / 2, status,
               [(b"content-type", b"text/html")], rng.randrange(200, 20_000), 0, 0)


def size(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return os.path.getsize(path) + (os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0)


def child(count: int, keep_days: float) -> None:
    """Runs with the tree under test first on sys.path; prints the sizes as JSON."""
    from asgi_log_to_sqlite.record import Shaper
    from asgi_log_to_sqlite.writer import Writer

    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "log.db")
    writer = Writer(path, queue_size=count + 10, max_size_mb=100_000)
    for record in records(Shaper(), count):
        writer.submit(record)
    assert writer.flush(600) and writer.close()
    result = {"rows": count, "logged": size(path)}
    import asgi_log_to_sqlite

    # Looked up in the tree under test only: the editable install would supply this tree's module.
    if not os.path.exists(os.path.join(os.path.dirname(asgi_log_to_sqlite.__file__), "retention.py")):
        print(json.dumps(result))
        return
    from asgi_log_to_sqlite.retention import Retention
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rollups = sum(conn.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0] for t in tables if t.startswith("rollup_"))
        result["rollup_rows"] = rollups
        Retention(path, keep_days=keep_days, max_size_mb=100_000).prune(conn)
        result["kept_rows"] = conn.execute("SELECT count(*) FROM request_log").fetchone()[0]
    finally:
        conn.close()
    result["pruned"] = size(path)
    print(json.dumps(result))


def run(tree: pathlib.Path, count: int, keep_days: float) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{HERE}")
    out = subprocess.run([sys.executable, __file__, "--child", str(count), str(keep_days)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", metavar="REV")
    parser.add_argument("--requests", type=int, default=300_000)
    parser.add_argument("--keep-days", type=float, default=7)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), float(args.child[1]))
        return
    with revisions(args.against) as trees:
        results = {name: run(tree, args.requests, args.keep_days) for name, tree in trees.items()}
    print(f"{args.requests:,} requests over {DAYS} days (2,000 paths, 300 agents, 3,000 networks):")
    for name, result in results.items():
        line = f"  {name:12} logged: {result['logged'] / 2**20:6.1f} MB, {result['logged'] / result['rows']:5.1f} bytes/request"
        if "pruned" in result:
            line += (f"; {result['rollup_rows']:,} rollup rows; after keeping {args.keep_days:g} days "
                     f"({result['kept_rows']:,} rows): {result['pruned'] / 2**20:.1f} MB, "
                     f"{result['pruned'] / result['rows']:.1f} bytes per request logged")
        print(line)


if __name__ == "__main__":
    main()
