#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11: `demo`, `test`, or `bench`.

Each command creates the virtualenvs it needs under .venvs/ (one per Datasette line), and
reinstalls only when setup.py or the pinned requirements change.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENVS = ROOT / ".venvs"

# One virtualenv per Datasette line; the 1.0 line takes the newest alpha (--pre).
LINES = {
    "0.65": {"requirement": "datasette>=0.65,<0.66", "pre": False},
    "1.0": {"requirement": "datasette>=1.0a0,<1.1", "pre": True},
}


def log(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def venv_python(line: str) -> pathlib.Path:
    return VENVS / f"datasette-{line}" / "bin" / "python"


def ensure_venv(line: str) -> pathlib.Path:
    """Create (or refresh) the virtualenv for one Datasette line and return its python."""
    spec = LINES[line]
    venv = VENVS / f"datasette-{line}"
    stamp = venv / ".installed"
    fingerprint = hashlib.sha256(
        (ROOT / "setup.py").read_bytes() + repr(spec).encode()
    ).hexdigest()
    if stamp.exists() and stamp.read_text() == fingerprint and venv_python(line).exists():
        return venv_python(line)
    log(f"creating {venv.relative_to(ROOT)} (Datasette {line} line)")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv_python(line)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    # --pre only for Datasette itself: given to the whole install it also picks pre-releases of
    # httpx, pytest and the rest.
    subprocess.run(pip + (["--pre"] if spec["pre"] else []) + [spec["requirement"]], check=True)
    subprocess.run(pip + [spec["requirement"], "-e", f"{ROOT}[test,serve]"], check=True)
    stamp.write_text(fingerprint)
    return venv_python(line)


def datasette_version(python: pathlib.Path) -> str:
    return subprocess.run(
        [str(python), "-c", "import datasette.version as v; print(v.__version__)"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


# The browser tests drive Debian's Chromium through its ChromeDriver; no test tool downloads one.
BROWSER_PACKAGES = {"chromium": "/usr/bin/chromium", "chromium-driver": "/usr/bin/chromedriver"}


def ensure_browser() -> None:
    """Install Debian's chromium and chromium-driver when either is missing (as root, or through sudo)."""
    missing = [package for package, path in BROWSER_PACKAGES.items() if not os.path.exists(path)]
    if not missing:
        return
    log(f"installing Debian's {' and '.join(missing)} for the browser tests")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)


def run_tests(extra: list[str]) -> int:
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    ensure_browser()
    failed_lines = []
    for line in LINES:
        python = ensure_venv(line)
        version = datasette_version(python)
        report = VENVS / f"junit-{line}.xml"
        log(f"running the tests on Datasette {version}")
        started = time.monotonic()
        code = subprocess.call(
            [str(python), "-m", "pytest", "tests", f"--junitxml={report}", *extra],
            cwd=ROOT,
        )
        wall = time.monotonic() - started
        counts = junit_counts(report)
        for key in totals:
            totals[key] += counts[key]
        log(f"Datasette {version}: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['skipped']} skipped in {wall:.1f} s wall time (pytest exit {code})")
        if code != 0:
            failed_lines.append(version)
    print(f"all lines: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    if failed_lines:
        log(f"failures on Datasette {', '.join(failed_lines)}")
        return 1
    return 0


def junit_counts(report: pathlib.Path) -> dict:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    if not report.exists():
        return counts
    for suite in ET.parse(report).getroot().iter("testsuite"):
        tests = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts["failed"] += failed
        counts["skipped"] += skipped
        counts["passed"] += tests - failed - skipped
    return counts


def run_demo(line: str, port: int) -> int:
    python = ensure_venv(line)
    demo = ROOT / "examples" / "datasette"
    subprocess.run([str(python), str(demo / "make_demo_db.py")], check=True)
    config = ["-c", str(demo / "datasette.yaml")] if line == "1.0" else ["-m", str(demo / "metadata.json")]
    datasette = python.parent / "datasette"
    log(f"Datasette {datasette_version(python)} with the middleware stack from {config[1]}")
    log(f"open http://127.0.0.1:{port}/-/asgi-middleware to see the chain; Ctrl-C stops")
    # The stack's logger writes requests.db next to the config; create it now so Datasette serves it too.
    subprocess.run([str(python), "-c", "import asgi_log_to_sqlite as a; a.create_file('requests.db')"], cwd=demo, check=True)
    subprocess.run([str(datasette), "configure-asgi", "check", *config], cwd=demo, check=True)
    log(f"every request is logged to {demo / 'requests.db'}; browse it at http://127.0.0.1:{port}/requests")
    try:
        return subprocess.call(
            [str(datasette), "serve", "demo.db", "requests.db", *config, "--host", "127.0.0.1", "--port", str(port)],
            cwd=demo,
        )
    except KeyboardInterrupt:
        return 0


def run_bench(name: str, extra: list[str]) -> int:
    python = ensure_venv("1.0")
    return subprocess.call([str(python), str(ROOT / "benchmarks" / f"{name}.py"), *extra], cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="serve the demo database through the example middleware stack")
    demo.add_argument("--line", choices=sorted(LINES), default="1.0", help="Datasette line (default 1.0)")
    demo.add_argument("--port", type=int, default=8001)
    test = sub.add_parser("test", help="run the whole test suite on every Datasette line")
    test.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed on to pytest")
    bench = sub.add_parser("bench", help="run one script from benchmarks/")
    bench.add_argument("name", help="script name without .py, for example loader_build")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    # parse_known_args: pytest options such as -x or -k reach pytest instead of upsetting argparse.
    args, unknown = parser.parse_known_args()
    if unknown and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "demo":
        return run_demo(args.line, args.port)
    if args.command == "bench":
        return run_bench(args.name, args.bench_args)
    return run_tests(unknown + args.pytest_args)


if __name__ == "__main__":
    sys.exit(main())
