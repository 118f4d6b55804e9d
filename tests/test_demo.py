"""`scripts/dev.py demo`, piece by piece and for real: Datasette serving the example config with --root, its log
filled by the bundled traffic generator, the log behind sign-in."""
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from conftest import DATASETTE_MAJOR, ROOT, free_port, run, running_server

DEMO = ROOT / "examples" / "datasette"
CONFIG = ["-c", DEMO / "datasette.yaml"] if DATASETTE_MAJOR >= 1 else ["-m", DEMO / "metadata.json"]
LIVE, PAST, DAYS = 150, 1500, 30


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo served from a scratch folder, its log filled: (base URL, log file, the sign-in URL it printed)."""
    folder = tmp_path_factory.mktemp("demo")
    assert run("python", DEMO / "make_demo_db.py", folder / "demo.db").returncode == 0
    assert run("python", "-c", "import asgi_log_to_sqlite as a; a.create_file('requests.db')", cwd=folder).returncode == 0
    port = free_port()
    output = folder / "datasette.out"
    command = ["datasette", "serve", "demo.db", "requests.db", *CONFIG, "--root",
               "--host", "127.0.0.1", "--port", port]
    # Output to a file, not a pipe: uvicorn writes a line per request.
    with running_server(command, port, cwd=folder, ready_timeout=60, output=output):
        url = f"http://127.0.0.1:{port}"
        filled = run("python", "-m", "asgi_log_to_sqlite.traffic", url, "--requests", LIVE, "--seconds", 120,
                     "--log", "requests.db", "--past-requests", PAST, "--past-days", DAYS, "--seed", 13,
                     cwd=folder, timeout=180)
        assert filled.returncode == 0, filled.stderr
        # The server's logger writes a request's row just after its response: wait for the last ones.
        deadline = time.monotonic() + 30
        while one(folder / "requests.db", "select count(*) from request_log where flags & 256 = 0")[0] < LIVE:
            assert time.monotonic() < deadline, "the live requests' rows were not written within 30 s"
            time.sleep(0.1)
        sign_in = re.search(r"http://\S+/-/auth-token\?token=\w+", output.read_text()).group(0)
        yield url, folder / "requests.db", sign_in, filled.stdout


def one(log, sql):
    conn = sqlite3.connect(log)
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


def test_the_generator_fills_the_log_with_varied_traffic_over_past_days(demo):
    url, log, _, summary = demo
    assert f"{LIVE} live requests" in summary and f"over {DAYS} days imported" in summary
    live, imported = one(log, "select sum(flags & 256 = 0), sum(flags & 256 != 0) from request_log")
    assert live >= LIVE and imported >= PAST   # Datasette 1.0's redirects (?sql= to /-/query) add a line each
    assert one(log, "select count(distinct path) from readable_requests")[0] >= 20
    assert one(log, "select count(distinct substr(start, 1, 10)) from readable_requests")[0] >= DAYS
    statuses = {row for row in sqlite3.connect(log).execute("select distinct http_status from request_log")}
    assert {(200,), (400,), (404,), (405,)} <= statuses   # a bad query, missing pages, a POST with no form
    methods = {row for row in sqlite3.connect(log).execute("select distinct method from readable_requests")}
    assert methods == {("GET",), ("HEAD",), ("POST",)}
    bots, humans = one(log, "select sum(u.is_bot = 1), sum(u.is_bot = 0) from request_log r "
                            "join user_agents u on u.id = r.user_agent_id")
    assert bots >= 100 and humans >= 500
    assert one(log, "select count(*) from readable_requests where referer like 'https://www.google.com/%'")[0] > 0
    assert one(log, f"select count(*) from readable_requests where referer like '{url}/%'")[0] > 0
    # The dashboard reads the rollups: the past days are in them, visitors included.
    assert one(log, "select count(*) from rollup_daily")[0] >= DAYS
    assert one(log, "select count(distinct day) from rollup_visitors_daily")[0] >= DAYS


def test_anonymous_users_see_the_demo_but_not_the_log(demo):
    url, *_ = demo
    with httpx.Client(base_url=url) as client:
        assert client.get("/demo").status_code == 200
        assert client.get("/demo/numbers.json").status_code == 200
        for path in ("/requests", "/requests/readable_requests", "/requests/request_log.json",
                     "/requests.json?sql=select+count(*)+from+request_log", "/requests/user_agents.csv"):
            assert client.get(path).status_code == 403, path
        listed = client.get("/.json").json()
        assert "demo" in str(listed) and "requests" not in str(listed)


def test_the_printed_sign_in_link_opens_the_log(demo):
    url, _, sign_in, _ = demo
    with httpx.Client(base_url=url) as client:
        assert client.get(sign_in).status_code == 302
        assert client.get("/requests").status_code == 200
        with httpx.Client(base_url=url) as stranger:
            assert stranger.get(sign_in).status_code == 403   # good once, as the demo says
        rows = client.get("/requests/readable_requests.json?_shape=array&_size=5").json()
        assert len(rows) == 5 and {"path", "http_status", "user_agent"} <= set(rows[0])
        # The log's page links to its dashboard, which draws from this traffic: for root, and root only.
        [dashboard] = set(re.findall(r'href="([^"]*dashboard[^"]*)"', client.get("/requests").text))
        assert client.get(dashboard).status_code == 200
        assert httpx.get(url + dashboard).status_code == 403


def test_the_demo_runs_behind_the_whole_stack(demo):
    url, log, *_ = demo
    with httpx.Client(base_url=url) as client:
        chain = [entry["target"] for entry in client.get("/-/asgi-middleware.json").json()["middleware"]]
        page = client.get("/demo/numbers.json?_size=200", headers={"origin": "http://localhost:3000",
                                                                     "accept-encoding": "gzip"})
    assert chain[0] == "asgi_log_to_sqlite.AsgiLogToSqlite"
    assert {"asgi_cors.asgi_cors", "asgi_correlation_id.CorrelationIdMiddleware"} <= set(chain) and len(chain) >= 3
    assert page.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert re.fullmatch(r"[0-9a-f]{32}", page.headers["x-request-id"])
    assert page.headers["content-encoding"] == "gzip"


@pytest.mark.skipif(DATASETTE_MAJOR < 1, reason="the README's command serves the 1.0 line: run once, from the 1.0 suite")
def test_the_readme_s_first_command_serves_a_full_dashboard(tmp_path):
    """`python3 scripts/dev.py demo` itself (into a scratch folder, on a free port): it prints the URLs
    and the sign-in link once the log is filled, the link opens the dashboard, every panel has rows,
    and Ctrl-C stops it all."""
    port = free_port()
    process = subprocess.Popen([sys.executable, ROOT / "scripts" / "dev.py", "demo", "--port", str(port),
                                "--dir", tmp_path], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    lines: "queue.Queue[str]" = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(text) for text in process.stdout], daemon=True)
    reader.start()
    printed, sign_in = [], None
    try:
        deadline = time.monotonic() + 240
        while sign_in is None:
            assert time.monotonic() < deadline and process.poll() is None, "".join(printed)
            try:
                printed.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            found = re.search(r"sign in first\s+(http://127\.0\.0\.1:\d+/-/auth-token\?token=\w+)", printed[-1])
            sign_in = found and found.group(1)
        text = "".join(printed)
        for url in (f"http://127.0.0.1:{port}/demo", f"http://127.0.0.1:{port}/requests"):
            assert url in text, text
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/requests/-/dashboard.json").status_code == 403  # signed out
            client.get(sign_in)
            data = client.get("/requests/-/dashboard.json").json()
        assert {panel: result["error"] for panel, result in data["panels"].items() if result["error"]} == {}
        assert [panel for panel, result in data["panels"].items() if not result["rows"]] == []
        summary = data["panels"]["summary"]
        assert summary["rows"][0][summary["columns"].index("requests")] >= 200
    finally:
        os.killpg(process.pid, signal.SIGINT)
        stopped = process.wait(60)
        reader.join(10)
        process.stdout.close()
    assert stopped == 0
