"""The log's Datasette plugin: recognises log databases and serves their labels, queries and dashboard.

Its hooks live in the modules beside this one and are gathered here, the module Datasette loads:
``registration`` gives a log database its descriptions, labels, facets, table order and ready-made
queries (``recognise`` tells a log by its schema; ``metadata`` and ``queries`` hold what it gets);
``dashboard`` serves the traffic page and links to it from the database's page.
"""
from .dashboard import database_actions, register_routes, top_database
from .registration import asgi_wrapper, canned_queries, get_metadata, startup

__all__ = ["asgi_wrapper", "canned_queries", "database_actions", "get_metadata", "register_routes", "startup",
           "top_database"]
