"""`python -m datasette_configure_asgi serve|check`: the examples' Starlette and Django apps under real uvicorn."""
import json
import subprocess
import time

import httpx
import pytest

from conftest import BIN, ROOT, free_port, run, running_server, subprocess_env

EXAMPLES = ROOT / "examples"


def serve_command(app, config, port):
    return ["python", "-m", "datasette_configure_asgi", "serve", app, "--config", config,
            "--host", "127.0.0.1", "--port", port, "--no-access-log"]


def test_starlette_example_under_uvicorn_with_yaml_config():
    port = free_port()
    command = serve_command("examples.starlette.app:app", EXAMPLES / "starlette" / "middleware.yaml", port)
    with running_server(command, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            home = client.get("/", headers={"accept-encoding": "gzip", "origin": "http://elsewhere.example"})
            item = client.get("/items/7", headers={"accept-encoding": "gzip"})
    assert home.status_code == 200
    # Outermost asgi_cors (allow_all) then GZipMiddleware (minimum_size 500): both acted on one real response.
    assert home.headers["access-control-allow-origin"] == "*"
    assert home.headers["content-encoding"] == "gzip"
    assert home.text.startswith("hello from starlette")
    # The small JSON response is under GZip's threshold and passes through uncompressed.
    assert "content-encoding" not in item.headers
    assert item.json()["id"] == "7"


def test_django_example_under_uvicorn_with_toml_config():
    port = free_port()
    command = serve_command("examples.django_site.asgi:application", EXAMPLES / "django_site" / "middleware.toml", port)
    with running_server(command, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            allowed = client.get("/hello/", headers={"origin": "http://localhost:3000", "accept-encoding": "gzip"})
            other = client.get("/hello/", headers={"origin": "http://evil.example"})
    assert allowed.status_code == 200
    assert allowed.json() == {"framework": "django", "path": "/hello/"}
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert allowed.headers["content-encoding"] == "gzip"
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("suffix", ["json", "yaml", "toml"])
def test_bad_config_file_stops_serve_with_one_clear_error(tmp_path, suffix):
    entries = [{"class": "asgi_cors.asgi_cors", "args": {"allow_al": True}}]
    path = tmp_path / f"middleware.{suffix}"
    if suffix == "toml":
        path.write_text('[[middleware]]\nclass = "asgi_cors.asgi_cors"\nargs = { allow_al = true }\n')
        where = f"{path}:middleware[0].args.allow_al"
    else:
        path.write_text(json.dumps(entries))  # JSON is YAML too
        where = f"{path}[0].args.allow_al"
    result = run(*serve_command("examples.starlette.app:app", path, free_port()))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: ")
    assert f'{where}: unknown argument; did you mean "allow_all"?' in result.stderr


def test_bad_app_import_string_is_one_error(tmp_path):
    path = tmp_path / "middleware.json"
    path.write_text("[]")
    result = run(*serve_command("examples.starlette.app:nothing_here", path, free_port()))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ")
    assert "nothing_here" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_prints_the_chain_for_a_config_file():
    result = run("python", "-m", "datasette_configure_asgi", "check", "--config", EXAMPLES / "starlette" / "middleware.yaml")
    assert result.returncode == 0, result.stderr
    assert "1. asgi_cors.asgi_cors  (asgi-cors 1.0.1)" in result.stdout
    assert "2. starlette.middleware.gzip.GZipMiddleware  (starlette " in result.stdout


def test_uds_socket_serves(tmp_path):
    socket_path = tmp_path / "app.sock"
    config = EXAMPLES / "starlette" / "middleware.yaml"
    command = ["python", "-m", "datasette_configure_asgi", "serve", "examples.starlette.app:app",
               "--config", config, "--uds", socket_path, "--no-access-log"]
    process = subprocess.Popen([str(BIN / command[0]), *map(str, command[1:])], env=subprocess_env(),
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://localhost") as client:
            response = client.get("/items/1")
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_without_modules(blocked, *args):
    """Run `python -m datasette_configure_asgi ARGS` in a process where the ``blocked`` modules cannot be imported,
    as on a Python that lacks them (tomllib is new in 3.11)."""
    code = (
        "import runpy, sys\n"
        f"for name in {list(blocked)!r}: sys.modules[name] = None\n"
        "sys.argv[0] = 'datasette_configure_asgi'\n"
        "runpy.run_module('datasette_configure_asgi', run_name='__main__', alter_sys=True)\n"
    )
    return run("python", "-c", code, *args)


TOML_CONFIG = '[[middleware]]\nclass = "asgi_cors.asgi_cors"\nargs = { allow_all = true }\n'


def test_toml_config_is_read_with_tomli_before_python_311(tmp_path):
    path = tmp_path / "middleware.toml"
    path.write_text(TOML_CONFIG)
    result = run_without_modules(["tomllib"], "check", "--config", path)
    assert result.returncode == 0, result.stderr
    assert "1. asgi_cors.asgi_cors  (asgi-cors 1.0.1)" in result.stdout
    assert 'args: {"allow_all": true}' in result.stdout


def test_toml_config_without_any_toml_parser_says_what_to_install(tmp_path):
    path = tmp_path / "middleware.toml"
    path.write_text(TOML_CONFIG)
    result = run_without_modules(["tomllib", "tomli"], "check", "--config", path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"Error: {path}: reading TOML before Python 3.11 needs tomli: pip install tomli"


def test_yaml_config_without_pyyaml_says_what_to_install(tmp_path):
    path = tmp_path / "middleware.yaml"
    path.write_text("- class: asgi_cors.asgi_cors\n")
    result = run_without_modules(["yaml"], "check", "--config", path)
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: {path}: reading YAML needs PyYAML: pip install pyyaml"
