"""What a log database gets from Datasette, registered the way each line takes it.

- 0.65 asks plugins on every look-up: ``get_metadata`` (synchronous) returns the descriptions, labels,
  facets and hidden tables, and ``canned_queries`` the ready-made queries. Datasette merges the
  user's metadata over ours, so theirs wins key by key.
- 1.0 keeps metadata in its internal database and table options in ``datasette.config``: ours are
  written once per log database (the descriptions in one transaction), from ``startup`` for the
  databases present then, and from the first request after a database is added or a file becomes a
  log. Each value is written only where the user set none, and a query only where the user has none
  of that name.
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, Optional

from datasette import hookimpl

from . import metadata
from .queries import QUERIES
from .recognise import LogSchema, database_log_schema, log_databases

# 1.0's queries.source for the queries this plugin adds, which tells them from the user's.
QUERY_SOURCE = "asgi-log-to-sqlite"


def keeps_metadata_internally(datasette: Any) -> bool:
    """True on Datasette 1.0, whose metadata and stored queries live in its internal database."""
    return hasattr(datasette, "set_column_metadata") and hasattr(datasette, "add_query")


def database_metadata(datasette: Any, name: str, schema: LogSchema) -> dict:
    """A log database's metadata as 0.65's metadata.json would spell it: description, tables, columns."""
    tables: Dict[str, dict] = {}
    for table, columns in schema.columns.items():
        entry = metadata.table_config(table, columns)
        description = metadata.table_description(table)
        if description:
            entry["description"] = description
        described = metadata.column_descriptions(table, columns)
        if described:
            entry["columns"] = described
        if entry:
            tables[table] = entry
    return {"description_html": _description_html(datasette, name), "tables": tables}


def _description_html(datasette: Any, name: str) -> str:
    return metadata.database_description_html(
        datasette.urls.table(name, metadata.READABLE_VIEW), datasette.urls.database(name)
    )


# ---- Datasette 0.65 ------------------------------------------------------------------------------

# The keys our metadata holds, at any level. 0.65 asks for one key at a time, hundreds of times per
# page ("allow" for every table's permission check, "queries", "source"...): the others are no
# business of ours, and answering them costs nothing.
_KEYS = frozenset((None, "databases", "tables", "description_html", "description", "columns", "facets",
                   "label_column", "hidden", "sort_desc"))

# Each Datasette's metadata per log database, built once per schema: name -> (schema, metadata).
_built: "weakref.WeakKeyDictionary[Any, Dict[str, tuple]]" = weakref.WeakKeyDictionary()


@hookimpl
def get_metadata(datasette, key, database, table):
    if key not in _KEYS:
        return None
    if database is not None:
        schema = database_log_schema(datasette, database)
        logs = {database: schema} if schema is not None else {}
    else:
        logs = log_databases(datasette)
    if not logs:
        return None
    built = _built.setdefault(datasette, {})
    databases = {}
    for name, schema in logs.items():
        cached = built.get(name)
        if cached is None or cached[0] is not schema:
            cached = built[name] = (schema, _database_metadata_065(datasette, name, schema))
        databases[name] = _copied(cached[1], _users_database(datasette, name).get("tables") or {})
    return {"databases": databases}


def _database_metadata_065(datasette: Any, name: str, schema: LogSchema) -> dict:
    entry = database_metadata(datasette, name, schema)
    # A description_html would show instead of the user's plain description: theirs wins.
    users = _users_database(datasette, name)
    if users.get("description") or users.get("description_html"):
        del entry["description_html"]
    return entry


def _users_database(datasette: Any, name: str) -> dict:
    # What the user's metadata file says of this database (0.65 keeps it as _metadata_local).
    return ((getattr(datasette, "_metadata_local", None) or {}).get("databases") or {}).get(name) or {}


def _copied(entry: dict, users: dict) -> dict:
    # Datasette merges later sources (the user's metadata) into the dicts a hook returns, and pages
    # add keys to a database's dict: each call gets its own dicts down to each table's, and its own
    # columns for the tables the user's metadata names. A full deep copy would cost ~100 us a call,
    # and 0.65 asks dozens of times per page.
    tables = {}
    for table, options in entry["tables"].items():
        options = dict(options)
        if table in users and "columns" in options:
            options["columns"] = dict(options["columns"])
        tables[table] = options
    return dict(entry, tables=tables)


@hookimpl
def canned_queries(datasette, database, actor):
    if database_log_schema(datasette, database) is None:
        return None
    users = datasette.metadata("queries", database=database, fallback=False) or {}
    return {name: _canned_query(query) for name, query in QUERIES.items() if name not in users}


def _canned_query(query: dict) -> dict:
    return {"sql": query["sql"], "title": query["title"], "description": query["description"],
            "params": list(query["params"])}


# ---- Datasette 1.0 -------------------------------------------------------------------------------

# The log databases each Datasette has been given its metadata and queries for: name -> Database.
_served: "weakref.WeakKeyDictionary[Any, Dict[str, Any]]" = weakref.WeakKeyDictionary()


async def serve_log_databases(datasette: Any) -> None:
    """On 1.0, give every log database not yet served its metadata, table options and queries."""
    if not keeps_metadata_internally(datasette):
        return
    served = _served.setdefault(datasette, {})
    new = False
    for name, schema in log_databases(datasette).items():
        db = datasette.databases[name]
        if served.get(name) is db:
            continue
        # Marked first, so that a concurrent request does not start the same work again; unmarked
        # if it fails, so that the next request tries again.
        served[name] = db
        try:
            await serve_log_database(datasette, name, schema)
        except BaseException:
            del served[name]
            raise
        new = True
    if new:
        # 1.0 lists a database's queries through its catalog, which it refreshes at most once a
        # second: a database added since would show none of its queries until then.
        await datasette.refresh_schemas(force=True)


async def serve_log_database(datasette: Any, name: str, schema: Optional[LogSchema] = None) -> None:
    """On 1.0, write one log database's metadata, table options and queries where the user set none."""
    schema = schema or database_log_schema(datasette, name)
    if schema is None:
        raise ValueError(f"database {name!r} is not a log: expected request_log, log_meta and the lookup "
                         f"tables at schema version 3 or later")
    await _write_metadata(datasette, name, schema)
    _write_table_config(datasette, name, schema)
    await register_queries(datasette, name)


async def _write_metadata(datasette: Any, name: str, schema: LogSchema) -> None:
    # The rows set_database_metadata, set_resource_metadata and set_column_metadata write, in one
    # transaction: through them each of the ~170 values is a commit of its own, 6 ms apiece on
    # the disk-backed internal database, a second at startup. Each is added only where the user's
    # metadata (already applied from metadata.json) holds none, and get_*_metadata read them back.
    html = _description_html(datasette, name)
    resources, columns = [], []
    for table, names in schema.columns.items():
        description = metadata.table_description(table)
        if description:
            resources.append((name, table, description, name, table))
        columns.extend((name, table, column, text) for column, text in metadata.column_descriptions(table, names).items())

    def write(conn):
        conn.execute(
            "INSERT INTO metadata_databases (database_name, key, value) SELECT ?, 'description_html', ? "
            "WHERE NOT EXISTS (SELECT 1 FROM metadata_databases WHERE database_name = ? "
            "AND key IN ('description', 'description_html'))", (name, html, name))
        conn.executemany(
            "INSERT INTO metadata_resources (database_name, resource_name, key, value) SELECT ?, ?, 'description', ? "
            "WHERE NOT EXISTS (SELECT 1 FROM metadata_resources WHERE database_name = ? AND resource_name = ? "
            "AND key IN ('description', 'description_html'))", resources)
        conn.executemany(
            "INSERT INTO metadata_columns (database_name, resource_name, column_name, key, value) "
            "VALUES (?, ?, ?, 'description', ?) ON CONFLICT DO NOTHING", columns)

    await datasette.get_internal_database().execute_write_fn(write)


def _write_table_config(datasette: Any, name: str, schema: LogSchema) -> None:
    # table_config() reads datasette.config on every page, so options set here take effect at once.
    if datasette.config is None:
        datasette.config = {}
    tables = datasette.config.setdefault("databases", {}).setdefault(name, {}).setdefault("tables", {})
    for table, columns in schema.columns.items():
        options = metadata.table_config(table, columns)
        if options:
            configured = tables.setdefault(table, {})
            for key, value in options.items():
                configured.setdefault(key, value)


async def register_queries(datasette: Any, name: str) -> None:
    """On 1.0, add every ready-made query to database ``name``, except where a query of that name is the user's."""
    for query_name, query in QUERIES.items():
        existing = await datasette.get_query(name, query_name)
        if existing is not None and existing.source != QUERY_SOURCE:
            continue
        await datasette.add_query(
            name, query_name, query["sql"], title=query["title"], description=query["description"],
            parameters=list(query["params"]),
            # Trusted, as 0.65's canned queries are: who may view the query may run it, without execute-sql.
            is_trusted=True, source=QUERY_SOURCE,
        )


@hookimpl
async def startup(datasette):
    await serve_log_databases(datasette)


@hookimpl
def asgi_wrapper(datasette):
    if not keeps_metadata_internally(datasette):
        return _unchanged

    def wrap(app):
        async def serve_new_log_databases_first(scope, receive, send):
            if scope["type"] == "http":
                await serve_log_databases(datasette)
            await app(scope, receive, send)

        return serve_new_log_databases_first

    return wrap


def _unchanged(app):
    return app
