"""The code blocks of README.md and docs/*.md run, so that the documentation cannot drift from the code.

A block may follow an HTML comment on the line before its fence, holding directives separated by ";":

    <!-- not run: reason -->        shown, never run (the reason is required)
    <!-- file: NAME -->             written to NAME in the page's folder first; later blocks may use it
    <!-- line: 1.0 -->              runs only on that Datasette line (or 0.65); skipped on the other
    <!-- invalid -->                a config the loader must refuse, with exit 1 and no traceback
    <!-- given: DEST = SRC -->      the repository file SRC is copied to DEST before the block runs

Every other block runs, by its language, in one folder per page (where ``examples/`` links to the repository's):

    python          executed; a block written to a test_*.py file is run by pytest instead; test_* functions an
                    executed block defines are called (tmp_path given, coroutines run)
    yaml json toml  a config: a list, or {"middleware": [...]}, is checked by
                    ``python -m datasette_configure_asgi check --config``; a Datasette config ({"plugins": ...}) by
                    ``datasette configure-asgi check`` (-m for a metadata file, -c otherwise)
    bash            run with bash, every command must succeed
    console         each ``$ command`` is run and its output must hold the lines shown (``...`` = anything)
    sql             executed against a real log file
    text            output or a diagram, never run
"""
import asyncio
import contextlib
import inspect
import json
import os
import pathlib
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
try:
    import tomllib
except ImportError:  # Python before 3.11
    import tomli as tomllib
from dataclasses import dataclass, field

import httpx
import pytest
import yaml

from conftest import BIN, DATASETTE_MAJOR, ROOT, free_port, running_server

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))] + (
    [ROOT / "CHANGELOG.md"] if (ROOT / "CHANGELOG.md").exists() else []
)
LINE = "1.0" if DATASETTE_MAJOR >= 1 else "0.65"
RUNNABLE = {"python", "yaml", "json", "toml", "bash", "console", "sql"}
DIRECTIVES = {"not run", "file", "line", "invalid", "given"}
FENCE = re.compile(r"^```([\w-]*)\s*$")
MARKER = re.compile(r"^<!--(.*)-->\s*$")


@dataclass
class Block:
    page: pathlib.Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    directives: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: pathlib.Path):
    """Every fenced block of a page, with the directives of the comment just before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            raise AssertionError(f"{page.relative_to(ROOT)}:{i + 1}: a code block is never closed")
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        block = Block(page, i + 1, opening.group(1), "\n".join(lines[i + 1:end]) + "\n")
        marker = MARKER.match(previous.strip())
        if marker:
            block.directives = parse_directives(marker.group(1), block)
        blocks.append(block)
        i = end + 1
    return blocks


def parse_directives(comment: str, block: Block) -> dict:
    directives = {}
    comment, _, reason = comment.partition("not run:")  # the reason is free text, semicolons included
    if _:
        directives["not run"] = reason.strip()
        if not directives["not run"]:
            raise AssertionError(f"{block.where}: <!-- not run: ... --> needs a reason")
    for part in filter(None, (p.strip() for p in comment.split(";"))):
        name, _, value = part.partition(":")
        name, value = name.strip(), value.strip()
        if name not in DIRECTIVES:
            raise AssertionError(f"{block.where}: unknown directive {name!r} in <!--{comment}-->, expected one of {sorted(DIRECTIVES)}")
        if name == "line" and value not in ("0.65", "1.0"):
            raise AssertionError(f"{block.where}: line {value!r}, expected 0.65 or 1.0")
        directives[name] = value
    return directives


def command_env(folder: pathlib.Path, extra=None) -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.pop("PYTHONPATH", None)  # the virtualenv's own install, as a user has it
    env.update(extra or {})
    return env


def run_shell(script: str, folder: pathlib.Path, timeout=120, env=None):
    return subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True, timeout=timeout,
                          env=env or command_env(folder))


def secrets_in(value, found):
    """Collect the $env names and $file paths a config reads, so the check can provide them."""
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in ("$env", "$file"):
            found.append((next(iter(value)), next(iter(value.values()))))
        for item in value.values():
            secrets_in(item, found)
    elif isinstance(value, list):
        for item in value:
            secrets_in(item, found)
    return found


class PageRunner:
    def __init__(self, page: pathlib.Path, folder: pathlib.Path):
        self.page = page
        self.folder = folder
        self.log_file = None
        (folder / "examples").symlink_to(ROOT / "examples")

    def run(self, block: Block) -> str:
        """Run one block; returns what happened to it."""
        d = block.directives
        if "not run" in d:
            return "not run"
        if block.language == "text":
            return "text"
        if block.language not in RUNNABLE:
            raise AssertionError(f"{block.where}: language {block.language!r} is not run; use one of "
                                 f"{sorted(RUNNABLE | {'text'})}, or mark the block <!-- not run: reason -->")
        if "given" in d:
            dest, _, src = (s.strip() for s in d["given"].partition("="))
            shutil.copyfile(ROOT / src, self.folder / dest)
        if "file" in d:
            (self.folder / d["file"]).parent.mkdir(parents=True, exist_ok=True)
            (self.folder / d["file"]).write_text(block.text, encoding="utf-8")
        if d.get("line", LINE) != LINE:
            return f"only on {d['line']}"
        getattr(self, "run_" + block.language)(block)
        return "ran"

    # ---- python ----------------------------------------------------------------------------
    def run_python(self, block: Block) -> None:
        name = block.directives.get("file", "")
        if name.startswith("test_"):
            done = subprocess.run(
                [str(BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
                 "-o", "asyncio_default_fixture_loop_scope=function", name],
                cwd=self.folder, capture_output=True, text=True, timeout=120, env=command_env(self.folder))
            assert done.returncode == 0, f"{block.where}: pytest {name} failed:\n{done.stdout}\n{done.stderr}"
            assert re.search(r"\b[1-9]\d* passed\b", done.stdout), f"{block.where}: no test ran:\n{done.stdout}"
            return
        namespace = {"__name__": "docs_block_" + re.sub(r"\W", "_", block.where)}
        try:
            exec(compile(block.text, block.where, "exec"), namespace)
            for test_name, function in list(namespace.items()):
                if test_name.startswith("test_") and inspect.isfunction(function):
                    kwargs = {"tmp_path": self.folder} if "tmp_path" in inspect.signature(function).parameters else {}
                    result = function(**kwargs)
                    if inspect.iscoroutine(result):
                        asyncio.run(result)
        except Exception as error:
            raise AssertionError(f"{block.where}: the python block raised {type(error).__name__}: {error}") from error

    # ---- configs ---------------------------------------------------------------------------
    def run_yaml(self, block: Block) -> None:
        self.check_config(block, yaml.safe_load(block.text), ".yaml")

    def run_json(self, block: Block) -> None:
        self.check_config(block, json.loads(block.text), ".json")

    def run_toml(self, block: Block) -> None:
        self.check_config(block, tomllib.loads(block.text), ".toml")

    def check_config(self, block: Block, data, suffix: str) -> None:
        name = block.directives.get("file") or f"block-{block.line}{suffix}"
        path = self.folder / name
        path.write_text(block.text, encoding="utf-8")
        env = {}
        for kind, value in secrets_in(data, []):
            if kind == "$env":
                env[value] = "a value set by tests/test_docs.py"
            elif not os.path.isabs(value):
                (self.folder / value).parent.mkdir(parents=True, exist_ok=True)
                (self.folder / value).write_text("a secret written by tests/test_docs.py\n")
        if isinstance(data, dict) and "plugins" in data:
            option = "-m" if name.startswith("metadata") else "-c"
            if option == "-c" and LINE != "1.0":
                raise AssertionError(f"{block.where}: a datasette.yaml (-c) config works on 1.0 only: mark it <!-- line: 1.0 -->")
            command = [str(BIN / "datasette"), "configure-asgi", "check", option, name]
        elif isinstance(data, list) or (isinstance(data, dict) and "middleware" in data):
            command = [str(BIN / "python"), "-m", "datasette_configure_asgi", "check", "--config", name]
        else:
            raise AssertionError(f"{block.where}: a {suffix[1:]} block that is neither a middleware list nor a "
                                 "Datasette config; mark it <!-- not run: reason --> if it is something else")
        done = subprocess.run(command, cwd=self.folder, capture_output=True, text=True, timeout=60,
                              env=command_env(self.folder, env))
        output = done.stdout + done.stderr
        assert "Traceback" not in output, f"{block.where}:\n{output}"
        if "invalid" in block.directives:
            assert done.returncode == 1 and "Error:" in output, f"{block.where}: expected the loader to refuse it:\n{output}"
        else:
            assert done.returncode == 0, f"{block.where}: the loader refused it:\n{output}"

    # ---- shell -----------------------------------------------------------------------------
    def run_bash(self, block: Block) -> None:
        done = run_shell("set -euo pipefail\n" + block.text, self.folder)
        assert done.returncode == 0, f"{block.where}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"

    def run_console(self, block: Block) -> None:
        commands = []
        for line in block.text.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
            else:
                raise AssertionError(f"{block.where}: a console block starts with a `$ command` line")
        for command, expected in commands:
            done = run_shell(command, self.folder)
            output = (done.stdout + done.stderr).splitlines()
            position = 0
            for wanted in (line.rstrip() for line in expected):
                if wanted == "...":
                    continue
                pattern = re.compile(".*".join(re.escape(part) for part in wanted.split("...")) + r"\s*$")
                while position < len(output) and not pattern.match(output[position]):
                    position += 1
                assert position < len(output), (f"{block.where}: `{command}` did not print {wanted!r} "
                                                f"(in order); it printed:\n" + "\n".join(output))
                position += 1

    # ---- sql -------------------------------------------------------------------------------
    def run_sql(self, block: Block) -> None:
        conn = sqlite3.connect(self.real_log())
        try:
            conn.executescript(block.text)
        except sqlite3.Error as error:
            raise AssertionError(f"{block.where}: {error}") from None
        finally:
            conn.close()

    def real_log(self) -> pathlib.Path:
        """A log with a few real requests in it, written by the middleware."""
        if self.log_file is None:
            from asgi_log_to_sqlite import AsgiLogToSqlite

            async def app(scope, receive, send):
                await send({"type": "http.response.start", "status": 404 if "missing" in scope["path"] else 200,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"hello"})

            self.log_file = self.folder / "sql-check.db"
            logged = AsgiLogToSqlite(app, str(self.log_file))

            async def requests():
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=logged), base_url="http://docs") as client:
                    for path in ("/", "/a?token=x", "/missing"):
                        await client.get(path)

            asyncio.run(requests())
            assert logged.close()
        return self.log_file


@contextlib.contextmanager
def inside(folder: pathlib.Path):
    """Run in-process blocks from the page's folder, with it importable, as a user's script would be."""
    before_cwd, before_path, before_modules = os.getcwd(), list(sys.path), set(sys.modules)
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        from asgi_log_to_sqlite.writer import close_all

        close_all()
        os.chdir(before_cwd)
        sys.path[:] = before_path
        for name in set(sys.modules) - before_modules:
            module_file = getattr(sys.modules[name], "__file__", None) or ""
            if module_file.startswith(str(folder)):
                del sys.modules[name]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_code_block_runs_or_says_why_not(page, tmp_path):
    runner = PageRunner(page, tmp_path)
    outcomes = []
    with inside(tmp_path):
        for block in blocks_of(page):
            outcomes.append((block.where, runner.run(block)))
    assert {outcome for _, outcome in outcomes} <= {"ran", "not run", "text", "only on 0.65", "only on 1.0"}, outcomes


def test_the_docs_folder_has_every_page_the_readme_links_to():
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), f"README.md links to {link}, which does not exist"
    for page in (ROOT / "docs").glob("*.md"):
        assert f"(docs/{page.name}" in readme, f"README.md does not link to docs/{page.name}"


def test_relative_links_in_the_docs_point_at_files():
    for page in PAGES:
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.relative_to(ROOT)} links to {link}, which does not exist"


def test_readme_opens_with_the_two_commands_and_stays_short():
    readme = (ROOT / "README.md").read_text()
    first = blocks_of(ROOT / "README.md")[0]
    commands = [line.split("#")[0].strip() for line in first.text.splitlines()]
    assert commands == ["python3 scripts/dev.py demo", "python3 scripts/dev.py test"]
    assert readme.count("\n") < 300
    assert "python3 scripts/dev.py test" in (ROOT / ".ci" / "run").read_text()


def documented_columns(section: str) -> set:
    """Column names in the first column of the markdown table of a docs/schema.md section."""
    names = set()
    for row in re.findall(r"^\| (.+?) \|", section, re.M):
        names.update(re.findall(r"`(\w+)`", row))
    return names


def test_schema_doc_lists_every_column_of_every_table_and_view(tmp_path):
    import asgi_log_to_sqlite
    from asgi_log_to_sqlite.schema import LOOKUPS

    log_file = tmp_path / "log.db"
    asgi_log_to_sqlite.create_file(str(log_file))
    doc = (ROOT / "docs" / "schema.md").read_text()
    sections = dict(re.findall(r"^### ([^\n]+)\n(.*?)(?=^#{2,3} |\Z)", doc, re.M | re.S))
    conn = sqlite3.connect(log_file)
    try:
        # Every table and view a new file has, but the plain lookups, has a section listing its columns.
        names = {name for (name,) in conn.execute(
            "select name from sqlite_master where type in ('table', 'view') and name not like 'sqlite_%'")}
        plain_lookups = set(LOOKUPS) - {"user_agents"}
        for name in sorted(names - plain_lookups):
            real = {row[1] for row in conn.execute(f"PRAGMA table_info([{name}])")}
            assert real, name
            assert f"`{name}`" in sections, f"docs/schema.md has no section for {name}"
            assert documented_columns(sections[f"`{name}`"]) == real, f"docs/schema.md, {name}"
        assert documented_columns(sections["Lookup tables"]) == set(LOOKUPS)
        for table in plain_lookups:
            assert [row[1] for row in conn.execute(f"PRAGMA table_info([{table}])")] == ["id", "name"], table
        assert f"`PRAGMA user_version` ({asgi_log_to_sqlite.SCHEMA_VERSION})" in doc
    finally:
        conn.close()


def readme_block(file_name: str) -> str:
    [block] = [b for b in blocks_of(ROOT / "README.md") if b.directives.get("file") == file_name]
    return block.text


def logged_paths(log_file: pathlib.Path) -> set:
    conn = sqlite3.connect(log_file)
    try:
        return set(conn.execute("select path, http_status from readable_requests"))
    finally:
        conn.close()


def stop(server) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(30)


def test_readme_datasette_example_logs_every_request(tmp_path):
    # As the README says: create the log, serve it with the config, and every request is a row.
    config = "datasette.yaml" if DATASETTE_MAJOR >= 1 else "metadata.json"
    (tmp_path / config).write_text(readme_block(config))
    created = run_shell("python -c 'import asgi_log_to_sqlite; asgi_log_to_sqlite.create_file(\"requests.db\")'", tmp_path)
    assert created.returncode == 0, created.stderr
    port = free_port()
    option = "-c" if DATASETTE_MAJOR >= 1 else "-m"
    command = ["datasette", "serve", "requests.db", option, config, "--host", "127.0.0.1", "--port", port]
    with running_server(command, port, cwd=tmp_path, env=command_env(tmp_path)) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/").status_code == 200
            assert client.get("/no-such-page").status_code == 404
        stop(server)
    assert {("/", 200), ("/no-such-page", 404)} <= logged_paths(tmp_path / "requests.db")


def test_readme_starlette_example_logs_every_request(tmp_path):
    (tmp_path / "main.py").write_text(readme_block("main.py"))
    port = free_port()
    with running_server(["uvicorn", "main:app", "--port", port], port, cwd=tmp_path, env=command_env(tmp_path)) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            response = client.get("/")
        stop(server)  # lifespan shutdown writes what is queued
    assert response.text == "hello"
    assert logged_paths(tmp_path / "requests.db") == {("/", 200)}
