"""Configurable ASGI middleware: a checked list of ``{"class": ..., "args": ...}`` entries wrapped around an app.

Works as a Datasette plugin (see ``datasette_configure_asgi.plugin``) and around any ASGI app with ``wrap``.
"""
from .chain import Chain, chain_for, wrap
from .errors import ConfigError, Problem

PLUGIN_KEY = "datasette-configure-asgi"

__all__ = ["Chain", "ConfigError", "PLUGIN_KEY", "Problem", "chain_for", "wrap"]
