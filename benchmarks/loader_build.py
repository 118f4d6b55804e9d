"""First build versus rebuild of a 10-entry middleware chain.

    python3 scripts/dev.py bench loader_build [--rounds 15]

Datasette asks for the wrapped app several times (twice per process on 0.65, once per internal
datasette.client request on 1.0). This compares, in one interleaved run (A B C A B C ...):

  first    a fresh process's first build: imports, validation, signature checks, constructors;
  resolve  what every build would cost without the per-config cache (imports already done, as
           in 0.1, which re-resolved on each build): validation, signatures, constructors;
  rebuild  what a build costs now, after the first: the constructor calls only.

Each "first" sample runs in a new interpreter, so its imports are really cold.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

ENTRIES = [
    {"class": "starlette.middleware.trustedhost.TrustedHostMiddleware", "args": {"allowed_hosts": ["127.0.0.1"]}, "scopes": ["http", "websocket"]},
    {"class": "uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware", "args": {"trusted_hosts": "127.0.0.1"}},
    {"class": "asgi_cors.asgi_cors", "args": {"hosts": ["http://localhost:3000"]}, "include_paths": ["/api/"]},
    {"class": "starlette.middleware.cors.CORSMiddleware", "args": {"allow_origins": ["http://localhost:3000"]}},
    {"class": "starlette.middleware.gzip.GZipMiddleware", "args": {"minimum_size": 1000}, "exclude_paths": ["/-/"]},
    {"class": "starlette.middleware.errors.ServerErrorMiddleware", "args": {"debug": False}},
    {"class": "starlette.middleware.httpsredirect.HTTPSRedirectMiddleware", "enabled": True, "scopes": ["http"]},
    {"class": "uvicorn.middleware.message_logger.MessageLoggerMiddleware"},
    {"class": "uvicorn.middleware.wsgi.WSGIMiddleware", "args": {"workers": 1}, "include_paths": ["/wsgi/"]},
    {"class": "starlette.middleware.exceptions.ExceptionMiddleware", "args": {"debug": False}},
]

# Runs in a fresh interpreter: time the cold first build, then one warm resolve and one rebuild.
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from datasette_configure_asgi import chain as chain_module
entries = json.loads(sys.argv[1])
async def app(scope, receive, send): pass
t1 = time.perf_counter()
chain_module.chain_for(entries, "bench").wrap(app)
t2 = time.perf_counter()
print(json.dumps({"first": t2 - t1}))
"""


def time_in_process(entries, repeats: int = 50):
    """Median resolve (cache bypassed) and rebuild times, with imports already warm."""
    from datasette_configure_asgi import chain as chain_module

    async def app(scope, receive, send):
        pass

    chain = chain_module.chain_for(entries, "bench")
    chain.wrap(app)
    resolve, rebuild = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        chain_module.Chain(chain_module.resolve(entries, "bench"), "bench").wrap(app)
        resolve.append(time.perf_counter() - start)
        start = time.perf_counter()
        chain_module.chain_for(entries, "bench").wrap(app)
        rebuild.append(time.perf_counter() - start)
    return statistics.median(resolve), statistics.median(rebuild)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    samples = {"first": [], "resolve": [], "rebuild": []}
    config = json.dumps(ENTRIES)
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", CHILD, config], check=True, capture_output=True, text=True)
        samples["first"].append(json.loads(out.stdout)["first"])
        resolve, rebuild = time_in_process(ENTRIES)
        samples["resolve"].append(resolve)
        samples["rebuild"].append(rebuild)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"10-entry chain, {rounds} interleaved rounds, medians:")
    for name in ("first", "resolve", "rebuild"):
        print(f"  {name:8} {medians[name] * 1e6:10.1f} us   "
              f"(min {min(samples[name]) * 1e6:.1f}, max {max(samples[name]) * 1e6:.1f})")
    print(f"  rebuild / first   = {medians['rebuild'] / medians['first']:.4f}")
    print(f"  rebuild / resolve = {medians['rebuild'] / medians['resolve']:.3f}")


if __name__ == "__main__":
    main()
