"""The log's Datasette plugin: recognises log databases and serves their labels, queries and dashboard.

Its hooks live in the modules beside this one and are gathered here, the module Datasette loads.
"""
