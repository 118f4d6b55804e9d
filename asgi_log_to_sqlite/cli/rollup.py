"""``rollup``: what a log's hourly and daily rollups hold, day by day, and ``--rebuild`` to recompute
them from the raw rows still there (rollups.py)."""
from __future__ import annotations

import sqlite3
import sys
from typing import Any, Dict, List

import click

from .. import rollups, schema, toplists
from . import cli
from .output import emit, open_log, output_options

SUMMARY = ["day", "hours", "hits", "raw_rows", "visitors", "salt"]
REBUILT = ["day", "hours_rebuilt", "hours_partly_pruned", "hours_without_rows", "rows", "visitors"]


@cli.command("rollup")
@click.argument("file")
@click.option("--rebuild", is_flag=True,
              help="Recompute the rollups of every hour whose raw rows are all still there, from those rows")
@output_options
def rollup_command(file: str, rebuild: bool, fmt: str) -> None:
    """Show a log's rollups day by day, or rebuild them from its raw rows.

    Each day shows the hours it has rollups for, the requests they count ("hits"), the raw
    rows still in request_log ("raw_rows": fewer once pruned), its distinct visitors, and
    whether its salt still exists (deleted once the day is over).

    --rebuild recomputes every hour whose raw rows are all still there, the top lists' too
    (paths, referrers, agents): after correcting an agent's is_bot, say. Hours pruned wholly or in part keep their rollups; visitors are
    rebuilt only for days whose salt still exists. It holds the write lock while it runs;
    a live logger waits and loses nothing.

    Example:

    \b
        asgi-log-to-sqlite rollup logs/requests.db
        asgi-log-to-sqlite rollup logs/requests.db --rebuild --json
    """
    conn = open_log(file, write=rebuild)
    try:
        if not _has_rollups(conn):
            if not rebuild:
                raise click.ClickException(
                    f"{file}: has no rollup tables yet (schema version 1); the logger adds them at its next "
                    f"request, or run `asgi-log-to-sqlite rollup {file} --rebuild`")
            schema.ensure_schema(conn)  # a version 1 file: upgraded first, as the logger would
        if rebuild:
            emit([[day[column] for column in REBUILT] for day in _rebuild(conn, file)], REBUILT, fmt)
        else:
            emit(_summary(conn), SUMMARY, fmt)
    finally:
        conn.close()


def _has_rollups(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'rollup_hourly'").fetchone() is not None


def _rebuild(conn: sqlite3.Connection, file: str) -> List[Dict[str, Any]]:
    """Rollups().rebuild under a progress bar on stderr; a note there when there was nothing to rebuild."""
    total = conn.execute("SELECT count(*) FROM request_log").fetchone()[0]
    with click.progressbar(length=total, label="Rebuilding rollups", file=sys.stderr) as bar:
        shown = [0]

        def advance(done: int, _total: int) -> None:
            bar.update(done - shown[0])
            shown[0] = done

        # Two steps, each its own transaction: a lock met in the second leaves the first one done.
        rebuilt = "nothing was changed"
        try:
            summary = rollups.Rollups().rebuild(conn, progress=advance)
            rebuilt = "the rollups were rebuilt, the top lists were not"
            toplists.rebuild(conn)
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise click.ClickException(f"{file}: another process held the write lock for over 5 s; "
                                           f"try again ({rebuilt})") from None
            raise
    if not summary:
        click.echo(f"{file}: no raw rows: nothing to rebuild; the rollups are as they were", err=True)
    return summary


_SUMMARY_SQL = """
WITH hours AS (SELECT hour / 24 AS day, count(DISTINCT hour) AS hours FROM rollup_hourly GROUP BY 1),
     hits AS (SELECT day, sum(hits) AS hits FROM rollup_daily GROUP BY day),
     raw AS (SELECT start_ms / 86400000 AS day, count(*) AS raw_rows FROM request_log GROUP BY 1),
     visitors AS (SELECT day, count(DISTINCT visitor) AS visitors FROM rollup_visitors_daily GROUP BY day),
     days AS (SELECT day FROM hours UNION SELECT day FROM hits UNION SELECT day FROM raw)
SELECT d.day, coalesce(h.hours, 0), coalesce(t.hits, 0), coalesce(r.raw_rows, 0), coalesce(v.visitors, 0),
       EXISTS (SELECT 1 FROM rollup_salts s WHERE s.day = d.day)
FROM days d LEFT JOIN hours h USING (day) LEFT JOIN hits t USING (day) LEFT JOIN raw r USING (day)
LEFT JOIN visitors v USING (day)
ORDER BY d.day
"""


def _summary(conn: sqlite3.Connection) -> List[List[Any]]:
    """One row per day that has rollups or raw rows."""
    return [[rollups.day_text(day), hours, hits, raw, visitors, "kept" if salted else "deleted"]
            for day, hours, hits, raw, visitors, salted in conn.execute(_SUMMARY_SQL)]
