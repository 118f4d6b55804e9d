"""Log every request of an ASGI app to a SQLite file, off the event loop.

    app = AsgiLogToSqlite(app, "log.db")

or, with datasette-configure-asgi::

    {"class": "asgi_log_to_sqlite.AsgiLogToSqlite", "args": {"file": "log.db"}}
"""
import warnings
from importlib import metadata as _metadata

from .middleware import AsgiLogToSqlite
from .schema import SCHEMA_VERSION, create_file

__all__ = ["AsgiLogToSqlite", "PackageClashWarning", "SCHEMA_VERSION", "create_file"]


class PackageClashWarning(UserWarning):
    """The asgi-log-to-sqlite distribution (0.1.1) is installed too: it ships a module of this package's name."""


def _warn_if_the_old_distribution_is_installed() -> None:
    # Both distributions install an importable `asgi_log_to_sqlite`; which one wins depends on how each was
    # installed, so say so instead of letting one shadow the other in silence (docs/upgrading.md).
    try:
        old = _metadata.distribution("asgi_log_to_sqlite")
    except _metadata.PackageNotFoundError:
        return
    warnings.warn(
        f"asgi-log-to-sqlite {old.version} is installed beside datasette-configure-asgi, and both ship the "
        "import package asgi_log_to_sqlite (this one is datasette-configure-asgi's). Fix: "
        "pip uninstall asgi-log-to-sqlite, then pip install --force-reinstall datasette-configure-asgi",
        PackageClashWarning,
        stacklevel=2,
    )


_warn_if_the_old_distribution_is_installed()
