"""The file commands: ``merge`` (several logs into one) and ``rotate`` (one log into dated files).

Both are thin over merging.py; they show a progress bar on stderr when it is a terminal.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Optional

import click

from .. import merging
from . import cli
from .output import emit, output_options

_MERGED = ("source", "rows", "legacy_rows", "rollup_rows", "counters", "first_merge")
_ROTATED = ("file", "first", "rows", "legacy_rows", "rollup_rows", "counters", "first_merge")


@contextlib.contextmanager
def _bar(label: str) -> Iterator[Optional[Callable[[int, int], None]]]:
    """A progress callback for merging.py drawing a click progress bar on a terminal's stderr, else None."""
    stderr = sys.stderr
    if not stderr.isatty():
        yield None
        return
    bars = []

    def advance(rows: int, total: int) -> None:
        if not bars:
            bars.append(click.progressbar(length=total, label=label, file=stderr).__enter__())
        bars[0].update(rows)

    try:
        yield advance
    finally:
        if bars:
            bars[0].__exit__(None, None, None)


@cli.command()
@click.argument("destination", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@output_options
def merge(destination: str, sources: tuple, fmt: str) -> None:
    """Merge several log files (months, hosts) into DESTINATION, created if missing.

    Lookup ids are remapped, counters and rollups added. Running it again adds
    nothing twice: a source merged before contributes only its rows logged since.

    Example:

        asgi-log-to-sqlite merge all.db logs/requests-2024-*.db
    """
    try:
        with _bar("merging") as advance:
            summaries = merging.merge_files(destination, list(sources), advance)
    except merging.MergeError as error:
        raise click.ClickException(str(error)) from None
    emit([[summary[column] for column in _MERGED] for summary in summaries], _MERGED, fmt)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("pattern")
@click.option("--remove-source", is_flag=True,
              help="Delete FILE afterwards, once the dated files hold every one of its rows")
@output_options
def rotate(file: str, pattern: str, remove_source: bool, fmt: str) -> None:
    """Split FILE into dated files named by PATTERN, each row by its start time (UTC).

    Each file is a whole log database: the lookups its rows use, its period's
    rollups and its share of the counters. FILE stays as it is unless
    --remove-source; running it again adds only rows logged since.

    Example:

        asgi-log-to-sqlite rotate requests.db 'logs/requests-%Y-%m.db'
    """
    try:
        with _bar("rotating") as advance:
            summaries = merging.rotate_file(file, pattern, advance, remove_source=remove_source)
    except merging.MergeError as error:
        raise click.ClickException(str(error)) from None
    emit([[summary[column] for column in _ROTATED] for summary in summaries], _ROTATED, fmt)
