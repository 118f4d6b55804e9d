"""What the benchmark and stress scripts share: free ports, a logged uvicorn process, Debian tools, revisions."""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, Optional, Tuple

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(process: subprocess.Popen, port: int, what: str = "server", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start on port {port}")
            time.sleep(0.05)


# With two cores or more, servers run on CPU 1 and load generators on CPU 0, so that the client's
# work is not counted against the server (and the writer thread shares the server's core).
_PIN = bool(shutil.which("taskset")) and (os.cpu_count() or 1) >= 2
PIN_SERVER = ["taskset", "-c", "1"] if _PIN else []
PIN_LOAD = ["taskset", "-c", "0"] if _PIN else []


def start_hello(log_file: Optional[pathlib.Path], port: Optional[int] = None,
                pinned: bool = False) -> Tuple[subprocess.Popen, int]:
    """One single-worker uvicorn (httptools, asyncio) serving benchmarks/apps.py's hello-world,
    logged to ``log_file`` when given, bare otherwise. Returns the process once it listens.
    ``pinned`` runs it on CPU 1 (see PIN_SERVER)."""
    port = port or free_port()
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}")
    env.pop("BENCH_LOG_FILE", None)
    if log_file is not None:
        env["BENCH_LOG_FILE"] = str(log_file)
    process = subprocess.Popen(
        (PIN_SERVER if pinned else []) + [str(pathlib.Path(sys.executable).parent / "uvicorn"), "apps:hello_app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--http", "httptools", "--loop", "asyncio"],
        env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    wait_listening(process, port)
    return process, port


def ensure_tool(binary: str, debian_package: str) -> str:
    """The path of a command-line tool, installed from Debian's packages when missing (as root)."""
    found = shutil.which(binary)
    if found:
        return found
    subprocess.run(["apt-get", "update", "-q"], check=False, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", debian_package], check=True, stdout=subprocess.DEVNULL)
    return shutil.which(binary) or sys.exit(f"{binary} ({debian_package}) is not installed and could not be installed")


def fixed_rate_load(port: int, rate: float, seconds: float, prefix: str, workdir: pathlib.Path,
                    connections: int = 4) -> Tuple[int, list]:
    """Numbered GETs (prefix/<n>, n = 0 .. N-1) at a fixed rate, sent by h2load (nghttp2-client,
    a C load generator, installed from Debian if missing) on CPU 0.

    h2load walks its URI list from the start in every connection, so each connection is its own
    h2load process with its own range of numbers. Returns (requests sent, [(seconds since the
    start, latency in seconds, status)] for every response).
    """
    h2load = ensure_tool("h2load", "nghttp2-client")
    per_connection = int(rate * seconds / connections)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="h2load-", dir=workdir))
    processes, logs = [], []
    started = time.time()
    for c in range(connections):
        uris = workdir / f"uris-{c}.txt"
        first = c * per_connection
        uris.write_text("".join(f"http://127.0.0.1:{port}{prefix}/{n}\n"
                                for n in range(first, first + per_connection)))
        log = workdir / f"h2load-{c}.tsv"
        logs.append(log)
        processes.append(subprocess.Popen(
            PIN_LOAD + [h2load, "--h1", "-c", "1", "-n", str(per_connection), f"--rps={rate / connections:g}",
                        "-i", str(uris), f"--log-file={log}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
    for process in processes:
        process.wait(seconds * 3 + 60)
    results = []
    for log in logs:
        for line in log.read_text().splitlines():
            start_us, status, duration_us = line.split("\t")[:3]
            results.append((int(start_us) / 1e6 - started, int(duration_us) / 1e6, int(status)))
    results.sort()
    return per_connection * connections, results


@contextlib.contextmanager
def revisions(against: Optional[str]) -> Iterator[Dict[str, pathlib.Path]]:
    """{"this tree": ROOT}, and with ``against`` that git revision too, checked out in a temporary
    worktree (removed afterwards), so that both are measured in one run."""
    trees = {"this tree": ROOT}
    worktree = None
    if against:
        worktree = pathlib.Path(tempfile.mkdtemp(prefix="bench-revision-")) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(worktree), against], cwd=ROOT, check=True,
                       capture_output=True)
        trees[against] = worktree
    try:
        yield trees
    finally:
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
