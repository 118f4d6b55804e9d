"""Cardinality flood: a million requests, each with a unique path, query string and user agent.

    python3 scripts/dev.py bench stress_flood [--requests 1000000] [--max-distinct 100000] [--max-size-mb 64]

The requests go straight through the middleware (no sockets: this is about what reaches the
file), paced so that the writer keeps up, as it does under a server. Each lookup table is capped
by max_distinct_values and the file by max_size_mb. The report gives the final size, bytes per
request, rows written, values bucketed into "(other)", drops counted, and checks that rows plus
drops equal the requests sent and that the file passes integrity_check.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import sqlite3
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from asgi_log_to_sqlite import AsgiLogToSqlite  # noqa: E402

from apps import hello  # noqa: E402


def scope_for(n: int) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": f"/scan/{n:x}/wp-login.php", "raw_path": None, "query_string": f"id={n}&x={n * 7919}".encode(),
        "root_path": "", "server": ("127.0.0.1", 8000), "client": (f"198.51.{n % 256}.{n // 256 % 256}", 40000),
        "headers": [(b"host", b"example.com"), (b"user-agent", f"scanner/{n} (+https://bot.example/{n})".encode()),
                    (b"referer", f"https://spam.example/{n}".encode())],
    }


async def flood(app, count: int) -> None:
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    for n in range(count):
        await app(scope_for(n), receive, send)
        if n % 1000 == 0:
            while app.stats()["queued"] > 5000:
                await asyncio.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--max-distinct", type=int, default=100_000)
    parser.add_argument("--max-size-mb", type=float, default=64)
    args = parser.parse_args()
    log_file = os.path.join(tempfile.mkdtemp(prefix="flood-"), "log.db")
    app = AsgiLogToSqlite(hello, log_file, max_distinct_values=args.max_distinct, max_size_mb=args.max_size_mb)
    started = time.monotonic()
    asyncio.run(flood(app, args.requests))
    assert app.close(300)
    elapsed = time.monotonic() - started
    counted = app.stats()["counted"]
    conn = sqlite3.connect(log_file)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = conn.execute("select count(*) from request_log").fetchone()[0]
        bucketed_rows = conn.execute("select count(*) from request_log where flags & 128").fetchone()[0]
        sizes = {t: conn.execute(f"select count(*) from {t}").fetchone()[0]
                 for t in ("paths", "query_strings", "user_agents", "referers", "client_ips")}
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    size = os.path.getsize(log_file)
    dropped = sum(v for k, v in counted.items() if k != "bucketed")
    print(f"{args.requests:,} requests with unique paths, query strings and agents in {elapsed:.0f} s; "
          f"max_distinct_values={args.max_distinct:,}, max_size_mb={args.max_size_mb:g}")
    print(f"  file: {size / 1024 / 1024:.1f} MB ({size / args.requests:.1f} bytes per request), integrity {integrity}")
    print(f"  rows {rows:,}; rows with a bucketed value {bucketed_rows:,}; values bucketed {counted.get('bucketed', 0):,}")
    print(f"  lookup rows: {', '.join(f'{t} {n:,}' for t, n in sizes.items())}")
    print(f"  drops counted: {dropped:,} {({k: v for k, v in counted.items() if k != 'bucketed'}) or ''}")
    ok = rows + dropped == args.requests and integrity == "ok" and size <= args.max_size_mb * 1024 * 1024
    print(f"  rows + drops = requests, integrity ok, within budget: {ok}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
