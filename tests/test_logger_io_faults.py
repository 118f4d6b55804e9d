"""I/O errors at the Nth operation: a real write or fsync under SQLite fails once with EIO.

The fault comes from tests/faults/fail_nth_io.c, an LD_PRELOAD shim compiled here with gcc, in a
child process that runs the logger; nothing of ours is replaced. For every N in a small range,
the app must answer every request, rows plus counted drops must equal the requests, the file must
pass its checks, and writing must carry on after the fault.
"""
import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import sqlite_utils

from conftest import TESTS, checked, count_prefix, subprocess_env

ROUNDS, PER_ROUND = 4, 50

CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from asgi_log_to_sqlite import AsgiLogToSqlite
    from conftest import ok, scope_for, serve

    app = AsgiLogToSqlite(ok, sys.argv[1], batch_size=25)
    statuses = []
    for round_ in range(%(rounds)d):
        statuses += asyncio.run(serve(app, [scope_for(f"/r{round_}/{n}") for n in range(%(per_round)d)]))
        app.flush(30)
    app.close(30)
    print(json.dumps({"statuses": statuses, "counted": app.stats()["counted"]}))
""" % {"rounds": ROUNDS, "per_round": PER_ROUND})


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build the fault-injecting shim")
    library = tmp_path_factory.mktemp("shim") / "fail_nth_io.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(library), str(TESTS / "faults" / "fail_nth_io.c"), "-ldl"],
                   check=True)
    return library


def run_with_fault(shim, log_file, op, n):
    env = subprocess_env(LD_PRELOAD=str(shim), FAULT_PATH=log_file.name, FAULT_AT=str(n), FAULT_OP=op)
    done = subprocess.run([sys.executable, "-c", CHILD, str(log_file)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize("op,n", [("write", n) for n in range(1, 13)] + [("sync", n) for n in range(1, 4)])
def test_an_io_error_at_the_nth_operation_costs_no_row(shim, tmp_path, op, n):
    log_file = tmp_path / "faultlog.db"
    result, stderr = run_with_fault(shim, log_file, op, n)
    sent = ROUNDS * PER_ROUND
    assert result["statuses"] == [200] * sent
    db = sqlite_utils.Database(log_file)
    try:
        checked(db.conn)
        rows = db["request_log"].count
        last_round = count_prefix(db.conn, f"/r{ROUNDS - 1}")
    finally:
        db.close()
    assert last_round == PER_ROUND  # writing carried on after the fault
    # The fault did happen and was named for what it was; the batch it met was held and
    # retried, so it cost nothing.
    assert "cannot write (io_error" in stderr and "writing resumed after io_error" in stderr
    assert result["counted"] == {}, stderr
    assert rows == sent, (rows, stderr)
