"""Log every request of an ASGI app to a SQLite file, off the event loop.

    app = AsgiLogToSqlite(app, "log.db")

or, with datasette-configure-asgi::

    {"class": "asgi_log_to_sqlite.AsgiLogToSqlite", "args": {"file": "log.db"}}
"""
from .middleware import AsgiLogToSqlite
from .schema import SCHEMA_VERSION, create_file

__all__ = ["AsgiLogToSqlite", "SCHEMA_VERSION", "create_file"]
