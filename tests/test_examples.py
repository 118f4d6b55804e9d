"""The demo from the README: Datasette serving examples/datasette/demo.db through the example stack."""
import json
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
    database = tmp_path / "demo.db"
    built = run("python", DEMO / "make_demo_db.py", database)
    assert built.returncode == 0, built.stderr
    config = ["-c", DEMO / "datasette.yaml"] if DATASETTE_MAJOR >= 1 else ["-m", DEMO / "metadata.json"]
    port = free_port()
    command = ["datasette", "serve", database, *config, "--host", "127.0.0.1", "--port", port]
    with running_server(command, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            table = client.get("/demo/numbers.json?_size=200", headers={"accept-encoding": "gzip", "origin": "http://localhost:3000"})
            page = client.get("/-/asgi-middleware.json")
            wrong_host = client.get("/demo.json", headers={"host": "attacker.example"})
    assert table.status_code == 200
    assert table.headers["content-encoding"] == "gzip"
    assert table.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert len(table.json()["rows"]) == 200
    targets = [row["target"] for row in page.json()["middleware"]]
    assert targets == [
        "starlette.middleware.trustedhost.TrustedHostMiddleware",
        "asgi_cors.asgi_cors",
        "starlette.middleware.gzip.GZipMiddleware",
    ]
    # /-/ pages are excluded from GZip and outside CORS's include_paths.
    assert "content-encoding" not in page.headers
    assert wrong_host.status_code == 400
