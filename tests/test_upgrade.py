"""Upgrading from the asgi-log-to-sqlite 0.1.1 distribution, which ships a module of our package's name.

The real 0.1.1 wheel is downloaded from PyPI once per virtualenv and installed with ``pip install --target``,
as a user's second distribution would be; nothing of ours is imitated.
"""
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import asgi_log_to_sqlite
from conftest import BIN, ROOT

OLD = "asgi-log-to-sqlite==0.1.1"
DOWNLOADS = Path(sys.prefix) / "downloads"  # inside this virtualenv: rebuilt with it, never committed
FIX = "pip uninstall asgi-log-to-sqlite, then pip install --force-reinstall datasette-configure-asgi"

# What a user's script sees at import: which file it got, and every warning raised meanwhile.
PROBE = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import asgi_log_to_sqlite
print(json.dumps({"file": asgi_log_to_sqlite.__file__,
                  "warnings": [[w.category.__name__, str(w.message)] for w in caught]}))
"""


def pip(*args, timeout=120):
    return subprocess.run([str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def old_wheel():
    found = sorted(DOWNLOADS.glob("asgi_log_to_sqlite-0.1.1-*.whl"))
    if not found:
        done = pip("download", "--no-deps", OLD, "-d", DOWNLOADS)
        found = sorted(DOWNLOADS.glob("asgi_log_to_sqlite-0.1.1-*.whl"))
        if not found:
            said = (done.stderr.strip().splitlines() or ["nothing"])[-1]
            pytest.skip(f"cannot download {OLD} from PyPI to test the clash with it (pip: {said})")
    return found[0]


@pytest.fixture(scope="session")
def old_installed(old_wheel, tmp_path_factory):
    """A folder holding the 0.1.1 distribution as pip installs it: asgi_log_to_sqlite.py and its dist-info."""
    target = tmp_path_factory.mktemp("asgi-log-to-sqlite-0.1.1")
    done = pip("install", "--no-deps", "--no-index", "--target", target, old_wheel)
    assert done.returncode == 0, done.stderr
    assert (target / "asgi_log_to_sqlite.py").is_file() and list(target.glob("asgi_log_to_sqlite-0.1.1.dist-info"))
    return target


def probe(tmp_path, *path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, path)))
    done = subprocess.run([str(BIN / "python"), "-c", PROBE], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_old_distribution_beside_ours_is_named_at_import_with_the_fix(old_installed, tmp_path):
    seen = probe(tmp_path, ROOT, old_installed)  # ours first on the path, the old one installed after it
    assert Path(seen["file"]) == ROOT / "asgi_log_to_sqlite" / "__init__.py"
    [(category, message)] = seen["warnings"]
    assert category == "PackageClashWarning"
    assert "asgi-log-to-sqlite 0.1.1 is installed beside datasette-configure-asgi" in message
    assert FIX in message


def test_without_the_old_distribution_there_is_no_warning(tmp_path):
    seen = probe(tmp_path, ROOT)
    assert Path(seen["file"]) == ROOT / "asgi_log_to_sqlite" / "__init__.py"
    assert seen["warnings"] == []


def test_installed_into_one_folder_our_package_wins_and_warns(old_installed, tmp_path):
    # Two regular installs into one site-packages: a package directory is found before a module of its name.
    site = tmp_path / "site-packages"
    shutil.copytree(old_installed, site)
    shutil.copytree(ROOT / "asgi_log_to_sqlite", site / "asgi_log_to_sqlite",
                    ignore=shutil.ignore_patterns("__pycache__"))
    seen = probe(tmp_path, site)
    assert Path(seen["file"]) == site / "asgi_log_to_sqlite" / "__init__.py"
    assert [category for category, _ in seen["warnings"]] == ["PackageClashWarning"]


def test_ahead_of_an_editable_install_the_old_module_wins_in_silence(old_installed, tmp_path):
    # Why docs/upgrading.md says to look at __file__: our editable install's finder comes after sys.path.
    seen = probe(tmp_path, old_installed)
    assert Path(seen["file"]) == old_installed / "asgi_log_to_sqlite.py"
    assert seen["warnings"] == []


def test_the_warning_is_a_specific_category_that_a_strict_test_run_fails_on(old_installed, monkeypatch):
    # In-process, as under this suite's filterwarnings = error: the check runs against the real metadata.
    check = asgi_log_to_sqlite._warn_if_the_old_distribution_is_installed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check()  # nothing installed beside us: silent
    monkeypatch.syspath_prepend(str(old_installed))
    with pytest.warns(asgi_log_to_sqlite.PackageClashWarning, match="pip uninstall asgi-log-to-sqlite"):
        check()
    assert issubclass(asgi_log_to_sqlite.PackageClashWarning, UserWarning)


def test_a_0_1_1_construction_works_unchanged(old_installed, tmp_path):
    # 0.1.1's real constructor, read from its wheel: AsgiLogToSqlite(app, file), nothing else.
    signature = subprocess.run(
        [str(BIN / "python"), "-c", "import inspect, asgi_log_to_sqlite as old; "
                                    "print(list(inspect.signature(old.AsgiLogToSqlite).parameters))"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(old_installed)), capture_output=True, text=True, timeout=60)
    assert signature.returncode == 0, signature.stderr
    assert json.loads(signature.stdout.replace("'", '"')) == ["app", "file"]

    async def app(scope, receive, send):
        pass

    logged = asgi_log_to_sqlite.AsgiLogToSqlite(app, str(tmp_path / "log.db"))  # positionally, as 0.1.1 took them
    assert (logged.app, logged.file) == (app, str(tmp_path / "log.db"))
