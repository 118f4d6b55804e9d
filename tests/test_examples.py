"""The demo from the README: Datasette serving examples/datasette/demo.db through the example stack."""
import json
import signal
import sqlite3
import httpx
import yaml

from conftest import DATASETTE_MAJOR, KEY, ROOT, free_port, run, running_server

DEMO = ROOT / "examples" / "datasette"


def test_metadata_json_and_datasette_yaml_configure_the_same_stack():
    # 0.65 reads metadata.json, 1.0 reads datasette.yaml; the demo must be the same on both lines.
    from_yaml = yaml.safe_load((DEMO / "datasette.yaml").read_text())["plugins"][KEY]
    from_json = json.loads((DEMO / "metadata.json").read_text())["plugins"][KEY]
    assert from_yaml == from_json


def test_demo_serves_through_the_example_stack(tmp_path):
    # As `scripts/dev.py demo` does, but in a scratch folder: the logger's requests.db lands there.
    built = run("python", DEMO / "make_demo_db.py", tmp_path / "demo.db")
    assert built.returncode == 0, built.stderr
    created = run("python", "-c", "import asgi_log_to_sqlite as a; a.create_file('requests.db')", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    config = ["-c", DEMO / "datasette.yaml"] if DATASETTE_MAJOR >= 1 else ["-m", DEMO / "metadata.json"]
    port = free_port()
    command = ["datasette", "serve", "demo.db", "requests.db", *config, "--host", "127.0.0.1", "--port", port]
    with running_server(command, port, cwd=tmp_path) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            table = client.get("/demo/numbers.json?_size=200", headers={"accept-encoding": "gzip", "origin": "http://localhost:3000"})
            page = client.get("/-/asgi-middleware.json")
            wrong_host = client.get("/demo.json", headers={"host": "attacker.example"})
            # The log is for the root user only (the config's allow block).
            anonymous_log = client.get("/requests/readable_requests.json")
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    assert table.status_code == 200
    assert table.headers["content-encoding"] == "gzip"
    assert table.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert len(table.json()["rows"]) == 200
    targets = [row["target"] for row in page.json()["middleware"]]
    assert targets == [
        "asgi_log_to_sqlite.AsgiLogToSqlite",
        "starlette.middleware.trustedhost.TrustedHostMiddleware",
        "asgi_correlation_id.CorrelationIdMiddleware",
        "asgi_cors.asgi_cors",
        "starlette.middleware.gzip.GZipMiddleware",
    ]
    # /-/ pages are excluded from GZip and outside CORS's include_paths.
    assert "content-encoding" not in page.headers
    assert wrong_host.status_code == 400
    assert anonymous_log.status_code == 403
    # The log, read once the server has stopped (its writer flushed): the three requests before it, gzip's bytes as sent.
    conn = sqlite3.connect(tmp_path / "requests.db")
    seen = set(conn.execute("select path, http_status from readable_requests"))
    assert {("/demo/numbers.json", 200), ("/-/asgi-middleware.json", 200), ("/demo.json", 400),
            ("/requests/readable_requests.json", 403)} <= seen
    sent = conn.execute("select body_size from readable_requests where path = '/demo/numbers.json'").fetchone()[0]
    conn.close()
    assert sent == int(table.headers["content-length"])  # compressed size: what went on the wire
