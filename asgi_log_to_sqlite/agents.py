"""User-agent classes: browser, OS, device class and a bot flag, found once per new lookup row."""
from __future__ import annotations

import sqlite_utils


def add_columns(db: sqlite_utils.Database) -> None:
    """Add the class columns to user_agents (schema version 2)."""
    for column, kind in (("browser", str), ("os", str), ("device", str), ("is_bot", int)):
        if column not in db.table("user_agents").columns_dict:
            db.conn.execute(f"ALTER TABLE user_agents ADD COLUMN [{column}] {'TEXT' if kind is str else 'INTEGER'}")
