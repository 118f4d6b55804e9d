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
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from typing import Optional

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
    try:
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env=env)
    except (OSError, subprocess.CalledProcessError) as error:
        # In CI the browser tests must run; on a machine without apt or sudo they skip, and say why.
        if os.environ.get("CI"):
            raise SystemExit(f"[dev] cannot install {' and '.join(missing)} ({error}); the browser tests need them")
        log(f"cannot install {' and '.join(missing)} ({error}): the browser tests will be skipped")


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


def run_demo(line: str, port: int, folder: Optional[pathlib.Path] = None) -> int:
    """Serve the demo and its live log behind the example stack, fill the log, then trickle traffic until Ctrl-C.

    Its two databases go into ``folder`` (default examples/datasette/, beside the config).
    """
    python = ensure_venv(line)
    demo = ROOT / "examples" / "datasette"
    place = folder or demo
    place.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(python), str(demo / "make_demo_db.py"), str(place / "demo.db")], check=True,
                   stdout=subprocess.DEVNULL)
    config = ["-c", str(demo / "datasette.yaml")] if line == "1.0" else ["-m", str(demo / "metadata.json")]
    datasette = python.parent / "datasette"
    # A fresh log each run: what the dashboard shows is this run's traffic and its 30 past days.
    for suffix in ("", "-wal", "-shm"):
        (place / f"requests.db{suffix}").unlink(missing_ok=True)
    subprocess.run([str(python), "-c", "import asgi_log_to_sqlite as a; a.create_file('requests.db')"], cwd=place, check=True)
    checked = subprocess.run([str(datasette), "configure-asgi", "check", *config], cwd=place, capture_output=True, text=True)
    if checked.returncode != 0:
        print(checked.stdout + checked.stderr, end="")
        return 1
    chain = [part.split()[1] for part in checked.stdout.splitlines() if part.strip()[:1].isdigit()]
    log(f"Datasette {datasette_version(python)}, {config[1]}: {' > '.join(chain)}")
    server = subprocess.Popen(
        [str(datasette), "serve", "demo.db", "requests.db", *config, "--root", "--host", "127.0.0.1", "--port", str(port)],
        cwd=place, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    sign_in: list = []
    threading.Thread(target=_quiet_server_output, args=(server, sign_in), daemon=True).start()
    trickle = None
    url = f"http://127.0.0.1:{port}"
    traffic = [str(python), "-m", "asgi_log_to_sqlite.traffic", url]
    # Ctrl-C reaches every process of the terminal's group; SIGINT or SIGTERM to this one alone, even
    # started in the background (where SIGINT starts ignored), stops the others too.
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        if not _listening(server, port, timeout=60):
            log(f"Datasette did not start on port {port} (exit {server.poll()})")
            return 1
        # A few hundred now and thousands before: past hours carry enough that the burst of now
        # does not flatten the traffic chart.
        log("filling the log: 200 live requests, then 6,000 over the past 30 days from an access log")
        filled = subprocess.run(traffic + ["--requests", "200", "--seconds", "120", "--log", "requests.db",
                                           "--past-requests", "6000", "--past-days", "30"],
                                cwd=place, capture_output=True, text=True)
        log((filled.stdout or filled.stderr).strip())
        print(f"""
  demo database   {url}/demo
  log database    {url}/requests       (its dashboard is linked from there)
  sign in first   {sign_in[0] if sign_in else '(Datasette printed no sign-in link)'}
                  the log is for the root user only; the link works once: restart the demo for another
  the chain       {url}/-/asgi-middleware

[dev] a request every 2 s keeps the live panel moving; Ctrl-C stops everything
""", flush=True)
        while server.poll() is None:
            if trickle is None or trickle.poll() is not None:
                # Each run is bounded (300 requests, 10 minutes); the next starts when it ends.
                trickle = subprocess.Popen(traffic + ["--requests", "300", "--seconds", "600", "--rate", "0.5", "--quiet"],
                                           cwd=place)
            time.sleep(0.5)
        # Exit 0: Datasette was told to stop (Ctrl-C reached it first); anything else it says itself.
        if server.returncode != 0:
            log(f"Datasette stopped (exit {server.returncode})")
        return server.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        for process in (trickle, server):
            if process is not None and process.poll() is None:
                process.terminate()
        for process in (trickle, server):
            if process is not None:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def _quiet_server_output(server: subprocess.Popen, sign_in: list) -> None:
    """Keep Datasette's sign-in link, drop uvicorn's INFO lines (one per request), print the rest."""
    for text in server.stdout:
        if "/-/auth-token?token=" in text:
            sign_in.append(text.strip())
        elif not text.startswith("INFO:"):
            print(f"[datasette] {text}", end="", flush=True)


def _listening(server: subprocess.Popen, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while server.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def run_bench(name: str, extra: list[str]) -> int:
    python = ensure_venv("1.0")
    return subprocess.call([str(python), str(ROOT / "benchmarks" / f"{name}.py"), *extra], cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="serve the demo database and its live log behind the example middleware stack, with traffic")
    demo.add_argument("--line", choices=sorted(LINES), default="1.0", help="Datasette line (default 1.0)")
    demo.add_argument("--port", type=int, default=8001)
    demo.add_argument("--dir", type=pathlib.Path, help="where its databases go (default examples/datasette/)")
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
        return run_demo(args.line, args.port, args.dir)
    if args.command == "bench":
        return run_bench(args.name, args.bench_args)
    return run_tests(unknown + args.pytest_args)


if __name__ == "__main__":
    sys.exit(main())
