"""``agents``: what kinds of clients a log has seen (device class, bot flag, browser, OS) with their
hits, and ``--reclassify`` to run the parser again over the user_agents rows (agents.py)."""
from __future__ import annotations

import sqlite3
import sys
from typing import Any, List, Sequence, Tuple

import click

from .. import agents as classes
from .. import schema
from . import cli
from .output import emit, open_log, output_options

# --by choices -> the user_agents column each groups by.
GROUPS = {"device": "device", "bot": "is_bot", "browser": "browser", "os": "os"}
# What the rows without a User-Agent header are shown as, in each class.
NO_AGENT = "(no agent)"


@cli.command("agents")
@click.argument("file")
@click.option("--by", "by", multiple=True, type=click.Choice(list(GROUPS)),
              help="Group by these classes, in this order (repeat it; default: device, bot, browser, os)")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the N groups with the most hits")
@click.option("--reclassify", is_flag=True,
              help="First run the parser over the agents without classes (from before schema version 2, or "
                   "past the logger's per-second budget), keeping the bot flags they have")
@click.option("--all", "every", is_flag=True,
              help="With --reclassify: over every agent, recomputing every class (corrections made by hand are lost)")
@output_options
def agents_command(file: str, by: Sequence[str], limit: Any, reclassify: bool, every: bool, fmt: str) -> None:
    """Show the device classes, bot flags, browsers and OSes of a log's user agents, with hits.

    "agents" is how many distinct User-Agent values fall in a group, "hits" how many logged
    requests sent them. Each agent is classified once, when the logger first stores it; a
    class left empty has not been found yet (run --reclassify). Correct one with an UPDATE of its
    user_agents row, then `asgi-log-to-sqlite rollup FILE --rebuild` (docs/agents.md).

    Example:

    \b
        asgi-log-to-sqlite agents logs/requests.db --by device --by bot
        asgi-log-to-sqlite agents logs/requests.db --reclassify
    """
    if every and not reclassify:
        raise click.ClickException("--all goes with --reclassify: it says which agents to run the parser over")
    by = list(by) or list(GROUPS)
    if reclassify:
        _reclassify(file, every)
    conn = open_log(file)
    try:
        classified = _has_classes(conn)
        rows = _groups(conn, by, classified)
        missing = classes.pending(conn) if classified else conn.execute("SELECT count(*) FROM user_agents").fetchone()[0]
    finally:
        conn.close()
    if limit is not None:
        rows = rows[:limit]
    emit([_shown(row, by, fmt) for row in rows], by + ["agents", "hits"], fmt)
    if missing:
        click.echo(f"{file}: {missing:,} agent(s) have no classes yet; "
                   f"`asgi-log-to-sqlite agents {file} --reclassify` finds them", err=True)


def _reclassify(file: str, every: bool) -> None:
    """Run the parser over the agents (all, or those without classes), with a progress bar on stderr."""
    conn = open_log(file, write=True)
    try:
        if not _has_classes(conn):
            schema.ensure_schema(conn)  # a version 1 file: upgraded first, as the logger would
        total = classes.pending(conn, every=every)
        done = changed = flags = 0
        with click.progressbar(length=total, label="Classifying agents", file=sys.stderr) as bar:
            for rows, rows_changed, flags_changed in classes.reclassify(conn, every=every):
                done, changed, flags = done + rows, changed + rows_changed, flags + flags_changed
                bar.update(rows)
    finally:
        conn.close()
    click.echo(f"{file}: ran the parser over {done:,} agent(s); {changed:,} changed", err=True)
    if flags:
        click.echo(f"{file}: {flags:,} bot flag(s) changed; `asgi-log-to-sqlite rollup {file} --rebuild` "
                   f"brings the rollups in line", err=True)


def _has_classes(conn: sqlite3.Connection) -> bool:
    """Whether user_agents has the class columns (a version 1 file has not)."""
    return "is_bot" in {row[1] for row in conn.execute("PRAGMA table_info(user_agents)")}


def _groups(conn: sqlite3.Connection, by: List[str], classified: bool) -> List[Tuple[Any, ...]]:
    """(class values in ``by`` order..., agents, hits) per group, most hits first; requests without
    an agent are one more group, their classes NO_AGENT."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    # Hits per agent id, the rows of a 0.1.1 file (requests_0_1) included.
    hits = "SELECT user_agent_id AS id, count(*) AS n FROM request_log GROUP BY user_agent_id"
    if "requests_0_1" in tables:
        hits += " UNION ALL SELECT user_agent, count(*) FROM requests_0_1 GROUP BY user_agent"
    columns = ", ".join(f"ua.{GROUPS[name]}" if classified else "NULL" for name in by)
    found = conn.execute(f"""
        WITH hits AS (SELECT id, sum(n) AS n FROM ({hits}) GROUP BY id)
        SELECT {columns}, count(*), coalesce(sum(h.n), 0) AS total
        FROM user_agents ua LEFT JOIN hits h ON h.id = ua.id
        GROUP BY {', '.join(str(i + 1) for i in range(len(by)))}
        UNION ALL
        SELECT {', '.join('?' for _ in by)}, 0, sum(n) FROM hits WHERE id IS NULL HAVING sum(n) > 0
        ORDER BY total DESC, {', '.join(str(i + 1) for i in range(len(by)))}""", [NO_AGENT if name != "bot" else None for name in by]).fetchall()
    return found


def _shown(row: Tuple[Any, ...], by: List[str], fmt: str) -> List[Any]:
    """A group's row as printed: the bot flag as yes/no (true/false in JSON), unknown left empty."""
    shown = list(row)
    for i, name in enumerate(by):
        if name == "bot" and shown[i] is not None:
            shown[i] = bool(shown[i]) if fmt == "json" else ("yes" if shown[i] else "no")
    return shown
