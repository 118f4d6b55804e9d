"""What the benchmark and stress scripts share: free ports, a logged uvicorn process, Debian tools."""
from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
from typing import Optional, Tuple

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


def start_hello(log_file: Optional[pathlib.Path], port: Optional[int] = None) -> Tuple[subprocess.Popen, int]:
    """One single-worker uvicorn (httptools, asyncio) serving benchmarks/apps.py's hello-world,
    logged to ``log_file`` when given, bare otherwise. Returns the process once it listens."""
    port = port or free_port()
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}")
    env.pop("BENCH_LOG_FILE", None)
    if log_file is not None:
        env["BENCH_LOG_FILE"] = str(log_file)
    process = subprocess.Popen(
        [str(pathlib.Path(sys.executable).parent / "uvicorn"), "apps:hello_app", "--host", "127.0.0.1",
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
