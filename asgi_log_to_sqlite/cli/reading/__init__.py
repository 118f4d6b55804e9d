"""The reading commands: ``stats`` (a log at a glance), ``tail`` (rows as they arrive), ``check`` (is it healthy).

They only read, each through its own read-only connection, so the writer never waits on them (WAL).
"""
from . import check, stats, tail  # noqa: F401  (each adds its command to the group)
