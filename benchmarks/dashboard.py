"""The dashboard's data load on a big log: every panel's query, this period and the previous, through Datasette.

    python3 scripts/dev.py bench dashboard [--file LOG] [--rows 10000000] [--runs 3] [--time-limit-ms 1000]

Without ``--file`` it writes a log of ``--rows`` rows over 30 days with benchmarks/synthetic_log.py
(10,000,000 rows take minutes), into a temporary folder removed afterwards. It then serves that file
with Datasette and this distribution's plugin, in process, and loads the dashboard's data as the page
does: one GET /<db>/-/dashboard.json?panels=<id> per panel, all at once and in the page's order
(dashboard.FETCH_ORDER), each panel drawn when its own answer arrives. Cases:

  7d      the default period (the last 7 days), and the 7 days before it for the compared panels
  30d     the last 30 days, and the 30 before them
  live    one refresh of the live panels (summary, traffic, visitors per day, the last requests), one request

Reported per case: the median, fastest and slowest of ``--runs`` loads (after one warm-up), each until
the last panel's answer; then, for the median load, when each panel's answer arrived. Panels whose query
failed are named, such as those past Datasette's ``sql_time_limit_ms`` (``--time-limit-ms``, 1,000 by
default as in Datasette). The requirement is a load under 1 s on 10,000,000 rows.
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
from typing import Dict, List, Tuple

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from datasette.app import Datasette  # noqa: E402
from datasette.version import __version__ as DATASETTE_VERSION  # noqa: E402

from asgi_log_to_sqlite.datasette.dashboard import FETCH_ORDER, LIVE  # noqa: E402


def cases() -> Dict[str, Tuple[str, List[List[str]]]]:
    """case -> (range parameters, the panels of each request)."""
    each = [[panel] for panel in FETCH_ORDER]
    return {"7d": ("", each), "30d": ("range=30d&", each), "live": ("", [list(LIVE)])}


async def timed_get(ds, url: str, began: float) -> Tuple[float, dict]:
    response = await ds.client.get(url)
    if response.status_code != 200:
        raise SystemExit(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    return time.perf_counter() - began, response.json()


async def load(ds, database: str, period: str, requests: List[List[str]]) -> Tuple[float, List[tuple]]:
    """One load of the page's data: (seconds until the last answer, [(seconds, panels, errors)] per request)."""
    began = time.perf_counter()
    answers = await asyncio.gather(*(
        timed_get(ds, f"/{database}/-/dashboard.json?{period}panels={','.join(panels)}", began)
        for panels in requests))
    arrivals = []
    for panels, (seconds, data) in zip(requests, answers):
        errors = [panel["error"] for panel in [*data["panels"].values(), *data["previous"].values()] if panel["error"]]
        arrivals.append((seconds, ",".join(panels), errors))
    return max(seconds for seconds, _, _ in arrivals), sorted(arrivals)


async def measure(path: str, runs: int, time_limit_ms: int) -> int:
    ds = Datasette([path], settings={"sql_time_limit_ms": time_limit_ms})
    database = pathlib.Path(path).stem
    print(f"Datasette {DATASETTE_VERSION}, {path}: {os.path.getsize(path) / 1e6:,.0f} MB, "
          f"sql_time_limit_ms {time_limit_ms:,}")
    failed = 0
    for case, (period, requests) in cases().items():
        await load(ds, database, period, requests)  # warm-up: Datasette's first request, the page cache
        loads = sorted([await load(ds, database, period, requests) for _ in range(runs)], key=lambda pair: pair[0])
        seconds = [total for total, _ in loads]
        print(f"{case:<5} median {statistics.median(seconds) * 1000:8,.0f} ms   fastest {seconds[0] * 1000:8,.0f} ms"
              f"   slowest {seconds[-1] * 1000:8,.0f} ms")
        for arrived, panels, errors in loads[len(loads) // 2][1]:
            failed += bool(errors)
            print(f"      {arrived * 1000:8,.0f} ms  {panels}" + (f"  FAILED: {errors[0]}" if errors else ""))
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", help="an existing log to read (default: generate one)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the generated log")
    parser.add_argument("--runs", type=int, default=3, help="timed loads per case, after one warm-up")
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
