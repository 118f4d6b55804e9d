"""The dashboard's data load on a big log: every panel's query, this period and the previous, through Datasette.

    python3 scripts/dev.py bench dashboard [--file LOG] [--rows 10000000] [--runs 5]

Without ``--file`` it writes a log of ``--rows`` rows over 30 days with benchmarks/synthetic_log.py
(10,000,000 rows take minutes), into a temporary folder removed afterwards. It then serves that file
with Datasette and this distribution's plugin, in process, and times GET /<db>/-/dashboard.json,
the one request behind the page, as the browser sends it:

  7d      the default period (the last 7 days) and the 7 days before it
  30d     the last 30 days and the 30 before them
  live    one refresh of the live panels (summary, traffic, visitors per day, the last requests)

Reported per case: the median, fastest and slowest of ``--runs`` loads (after one warm-up), and the
slowest panels of the median run as Datasette ran them (queries run concurrently, so panel times
overlap and add up to more than the load), and the panels that failed, such as those past Datasette's
``sql_time_limit_ms`` (``--time-limit-ms``, 1,000 by default as in Datasette). The requirement is a
load under 1 s on 10,000,000 rows.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
import sys
import tempfile
import time
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from datasette.app import Datasette  # noqa: E402
from datasette.version import __version__ as DATASETTE_VERSION  # noqa: E402

from asgi_log_to_sqlite.datasette.dashboard import LIVE  # noqa: E402


def cases(database: str):
    base = f"/{database}/-/dashboard.json"
    return {
        "7d": base,
        "30d": base + "?range=30d",
        "live": base + "?" + urllib.parse.urlencode({"panels": ",".join(LIVE)}),
    }


async def load(ds, url: str):
    began = time.perf_counter()
    response = await ds.client.get(url)
    seconds = time.perf_counter() - began
    if response.status_code != 200:
        raise SystemExit(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    return seconds, response.json()


def slowest_panels(data: dict, count: int = 4) -> str:
    timed = [(panel["ms"], name, panel.get("error")) for name, panel in data["panels"].items()]
    timed += [(panel["ms"], name + " (previous)", panel.get("error")) for name, panel in data["previous"].items()]
    timed.sort(reverse=True)
    return ", ".join(f"{name} {ms:,.0f} ms" + (" ERROR" if error else "") for ms, name, error in timed[:count])


async def measure(path: str, runs: int, time_limit_ms: int) -> int:
    ds = Datasette([path], settings={"sql_time_limit_ms": time_limit_ms})
    database = pathlib.Path(path).stem
    print(f"Datasette {DATASETTE_VERSION}, {path}: {os.path.getsize(path) / 1e6:,.0f} MB, "
          f"sql_time_limit_ms {time_limit_ms:,}")
    print(f"{'case':<6} {'median':>9} {'fastest':>9} {'slowest':>9}  slowest panels of the median load")
    failed = 0
    for case, url in cases(database).items():
        await load(ds, url)  # warm-up: Datasette's first request, the page cache
        timed = []
        for _ in range(runs):
            timed.append(await load(ds, url))
        timed.sort(key=lambda pair: pair[0])
        seconds = [s for s, _ in timed]
        median_data = timed[len(timed) // 2][1]
        errors = [f"{name}: {panel['error']}" for name, panel in median_data["panels"].items() if panel.get("error")]
        failed += bool(errors)
        print(f"{case:<6} {statistics.median(seconds) * 1000:7,.0f} ms {seconds[0] * 1000:7,.0f} ms "
              f"{seconds[-1] * 1000:7,.0f} ms  {slowest_panels(median_data)}")
        for error in errors:
            print(f"       {error}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", help="an existing log to read (default: generate one)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the generated log")
    parser.add_argument("--runs", type=int, default=5, help="timed loads per case, after one warm-up")
    parser.add_argument("--time-limit-ms", type=int, default=1000,
                        help="Datasette's sql_time_limit_ms (its default is 1000): a query past it fails its panel")
    args = parser.parse_args()
    if args.file:
        return asyncio.run(measure(args.file, args.runs, args.time_limit_ms))
    from synthetic_log import make_log

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "requests.db")
        print(f"generating {args.rows:,} rows over 30 days ...", flush=True)
        make_log(path, args.rows, days=30, seed=0,
                 progress=lambda step, seconds: print(f"  {step:<9} {seconds:8.1f} s", flush=True))
        return asyncio.run(measure(path, args.runs, args.time_limit_ms))


if __name__ == "__main__":
    sys.exit(main())
