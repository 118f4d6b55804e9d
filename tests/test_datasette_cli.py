"""Real `datasette` processes: bad configs end in one `Error:` and no traceback; every config source works."""
import json

import pytest

from bad_configs import BAD_CONFIGS
from conftest import DATASETTE_MAJOR, KEY, config_file_args, only_1x, run, subprocess_env


def assert_clean_error(result, expected):
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert result.stderr.startswith("Error: "), output
    for fragment in expected:
        assert fragment in result.stderr, output


@pytest.mark.parametrize("mode", ["--get", "serve"])
@pytest.mark.parametrize("entries,expected", BAD_CONFIGS)
def test_bad_config_stops_datasette_with_one_clear_error(tmp_path, mode, entries, expected):
    options = config_file_args(tmp_path, entries)
    if mode == "--get":
        result = run("datasette", "--memory", *options, "--get", "/-/versions.json")
    else:
        # Startup fails before the port is bound; a timeout here would mean it started serving.
        result = run("datasette", "serve", "--memory", *options, "--host", "127.0.0.1", "--port", "0", timeout=60)
    assert_clean_error(result, expected)


def test_good_config_serves_through_the_chain(tmp_path):
    entries = [{"class": "asgi_test_middlewares.AppendHeader", "args": {"value": "cli"}}]
    result = run("datasette", "--memory", *config_file_args(tmp_path, entries), "--get", "/-/asgi-middleware.json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["middleware"][0]["target"] == "asgi_test_middlewares.AppendHeader"


def test_env_secret_from_the_process_environment(tmp_path):
    entries = [{"class": "asgi_test_middlewares.AcceptsAnything", "args": {"token": {"$env": "DCA_CLI_TOKEN"}}}]
    options = config_file_args(tmp_path, entries)
    missing = run("datasette", "--memory", *options, "--get", "/")
    assert_clean_error(missing, [f'{KEY}[0].args.token: environment variable "DCA_CLI_TOKEN" is not set'])
    present = run("datasette", "--memory", *options, "--get", "/-/asgi-middleware.json",
                  env=subprocess_env(DCA_CLI_TOKEN="abc123"))
    assert present.returncode == 0, present.stderr
    assert "abc123" not in present.stdout
    assert json.loads(present.stdout)["middleware"][0]["args"] == {"token": "***"}


def test_check_command_prints_the_chain(tmp_path):
    entries = [
        {"class": "asgi_cors.asgi_cors", "args": {"allow_all": True}},
        {"class": "asgi_test_middlewares.AppendHeader", "args": {"value": "x"}, "scopes": ["http"]},
    ]
    result = run("datasette", "configure-asgi", "check", *config_file_args(tmp_path, entries))
    assert result.returncode == 0, result.stderr
    assert "2 middleware, outermost first" in result.stdout
    assert "1. asgi_cors.asgi_cors  (asgi-cors 1.0.1)" in result.stdout
    assert "2. asgi_test_middlewares.AppendHeader  (local code)" in result.stdout
    assert "scopes: http" in result.stdout


@pytest.mark.parametrize("entries,expected", BAD_CONFIGS[:6] + BAD_CONFIGS[-6:])
def test_check_command_reports_problems(tmp_path, entries, expected):
    result = run("datasette", "configure-asgi", "check", *config_file_args(tmp_path, entries))
    assert_clean_error(result, expected)
    assert result.returncode == 1


@only_1x
def test_setting_option_configures_the_plugin():
    value = json.dumps([{"class": "asgi_test_middlewares.AppendHeader", "args": {"value": "from-s"}}])
    result = run("datasette", "--memory", "-s", f"plugins.{KEY}", value, "--get", "/-/asgi-middleware.json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == f"-s plugins.{KEY}"
    assert data["middleware"][0]["args"] == {"value": "from-s"}


@only_1x
def test_metadata_and_config_both_set_warns_which_wins(tmp_path):
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"plugins": {KEY: [{"class": "asgi_test_middlewares.AppendHeader", "args": {"value": "meta"}}]}}))
    config = tmp_path / "datasette.yaml"
    config.write_text(json.dumps({"plugins": {KEY: [{"class": "asgi_test_middlewares.AppendHeader", "args": {"value": "conf"}}]}}))
    result = run("datasette", "--memory", "-m", metadata, "-c", config, "--get", "/-/asgi-middleware.json")
    assert result.returncode == 0, result.stderr
    assert f"Warning: {KEY} is set in both {metadata} (-m) and {config} (-c)" in result.stderr
    assert f"the one in {metadata} (-m) wins" in result.stderr
    assert json.loads(result.stdout)["middleware"][0]["args"] == {"value": "meta"}


@pytest.mark.skipif(DATASETTE_MAJOR >= 1, reason="0.65 reads plugin config from metadata only")
def test_check_command_refuses_config_options_on_065(tmp_path):
    config = tmp_path / "datasette.yaml"
    config.write_text("{}")
    result = run("datasette", "configure-asgi", "check", "-c", config)
    assert_clean_error(result, ["-c and -s set plugin config only on Datasette 1.0"])
