import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import settings
from datasette.version import __version__ as DATASETTE_VERSION

# Property tests: a few hundred examples in the suite; HYPOTHESIS_PROFILE=slow for the long run.
settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("slow", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
BIN = pathlib.Path(sys.executable).parent
KEY = "datasette-configure-asgi"
DATASETTE_MAJOR = int(DATASETTE_VERSION.split(".")[0])

only_1x = pytest.mark.skipif(DATASETTE_MAJOR < 1, reason="Datasette 1.0 reads plugin config from -c/-s")
only_065 = pytest.mark.skipif(DATASETTE_MAJOR >= 1, reason="Datasette 0.65 behaviour")


def subprocess_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT)])
    env.update(extra)
    return env


def run(*args, timeout=60, env=None, cwd=None):
    """Run a command from this virtualenv (datasette, python, ...) and capture its output."""
    command = [str(BIN / args[0]), *map(str, args[1:])]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env or subprocess_env(), cwd=cwd or ROOT
    )


def datasette_kwargs(entries):
    """Datasette() keyword arguments that configure the plugin where this Datasette line reads it."""
    plugins = {"plugins": {KEY: entries}}
    return {"config": plugins} if DATASETTE_MAJOR >= 1 else {"metadata": plugins}


def config_file_args(tmp_path, entries, name="plugins.json"):
    """CLI options for datasette serve/--get that configure the plugin on this line."""
    path = tmp_path / name
    path.write_text(json.dumps({"plugins": {KEY: entries}}))
    return ["-c", str(path)] if DATASETTE_MAJOR >= 1 else ["-m", str(path)]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(command, port, env=None, cwd=None, ready_timeout=30):
    """Start a real server process, wait until it accepts connections, stop it afterwards."""
    process = subprocess.Popen(
        [str(BIN / command[0]), *map(str, command[1:])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env or subprocess_env(), cwd=cwd or ROOT,
    )
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{process.stdout.read()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not listen on {port} within {ready_timeout} s")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
