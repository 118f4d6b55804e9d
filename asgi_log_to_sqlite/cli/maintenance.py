"""``prune`` and ``vacuum``: keep a log within its limits and give its free pages back, beside a running logger.

Both work in short transactions (``vacuum``'s one-time conversion excepted, see its help), so a
logger writing the same file waits a few milliseconds at most and loses nothing.
"""
from __future__ import annotations

import math
import os
import shutil
import sqlite3
import sys
from typing import Any, Callable, Optional

import click

from .. import retention
from . import cli
from .output import Section, emit_sections, open_log, output_options


@cli.command()
@click.argument("file")
@click.option("--keep-days", metavar="N", help="Delete rows that started more than N days ago")
@click.option("--keep-rows", metavar="N", help="Keep the newest N rows, delete the others")
@click.option("--max-size-mb", metavar="N",
              help="Past 90% of N MB in use, delete the oldest rows down to 80% "
                   "(default: 10% of the file system, 64 MB to 4096 MB; 'inf' for none)")
@output_options
def prune(file: str, keep_days: Optional[str], keep_rows: Optional[str], max_size_mb: Optional[str], fmt: str) -> None:
    """Delete the oldest rows past an age, a row count or a size, then unused lookup values, and give the space back.

    With no option it applies what the logger applies with no configuration: the default size
    budget. Safe while a logger writes the file: every deletion is a transaction of a few
    milliseconds.

    Example:

        asgi-log-to-sqlite prune logs/requests.db --keep-days 30
    """
    limits = {"keep_days": _number("--keep-days", keep_days, float),
              "keep_rows": _number("--keep-rows", keep_rows, int),
              "max_size_mb": _number("--max-size-mb", max_size_mb, float)}
    conn = open_log(file, write=True)
    try:
        policy = retention.Retention(file, **limits)
        with _Bars() as bars:
            report = _unlocked(file, lambda: policy.prune(conn, progress=bars.update))
        ever = retention.pruned_rows(conn)
    finally:
        conn.close()
    deleted = {"rows": report.rows}
    if report.legacy_rows:
        deleted["rows_of_0_1_1"] = report.legacy_rows
    if report.rollup_rows:
        deleted["rollup_rows"] = report.rollup_rows
    deleted.update((f"{table}_values", count) for table, count in sorted(report.lookups.items()) if count)
    budget = policy.budget_bytes
    space = _space(report)
    space.pairs["size_budget_mb"] = None if budget is None else round(budget / 2**20, 1)
    emit_sections([Section("deleted", "Deleted", pairs=deleted), space, _work(report, rows_pruned_ever=ever)],
                  fmt, header={"file": file})


@cli.command()
@click.argument("file")
@output_options
def vacuum(file: str, fmt: str) -> None:
    """Give a log's free pages back to the disk; convert a file made without incremental vacuum, once.

    Files made by this version use auto_vacuum=INCREMENTAL, and this only returns their free
    pages, in short transactions. Older files (auto_vacuum=NONE) are converted by one VACUUM,
    which rewrites the whole file under the write lock: a logger writing meanwhile holds its
    batches and retries them, so rows are lost only if its queue (queue_size) fills first. It
    needs free disk space of about twice the file.

    Example:

        asgi-log-to-sqlite vacuum logs/requests.db
    """
    conn = open_log(file, write=True)
    try:
        mode = conn.execute("PRAGMA auto_vacuum").fetchone()[0]
        if mode == 2:
            with _Bars() as bars:
                report = _unlocked(file, lambda: retention.vacuum_free_pages(conn, progress=bars.update))
            action = "returned free pages"
        else:
            size = os.path.getsize(file)
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(file))).free
            if free < 2 * size:
                raise click.ClickException(
                    f"{file}: converting rewrites the file and needs about {2 * size / 2**20:.0f} MB free; "
                    f"{free / 2**20:.0f} MB are")
            with _Bars() as bars:
                report = _unlocked(file, lambda: retention.convert_to_incremental(
                    conn, progress=lambda share: bars.update("convert", int(share * 1000), 1000)))
            action = "converted to auto_vacuum=INCREMENTAL"
    finally:
        conn.close()
    space = _space(report)
    space.title = f"Space: {action}"  # the table output shows no header
    emit_sections([space, _work(report)], fmt, header={"file": file, "action": action})


def _space(report: retention.Report) -> Section:
    pairs = {"size_before_mb": round(report.bytes_before / 2**20, 2),
             "size_after_mb": round(report.bytes_after / 2**20, 2),
             "freed_mb": round((report.bytes_before - report.bytes_after) / 2**20, 2),
             "pages_given_back": report.pages_vacuumed}
    note = "" if report.incremental else ("  freed pages stay in the file for reuse (auto_vacuum=NONE): "
                                          "run `asgi-log-to-sqlite vacuum` once to convert it")
    return Section("space", "Space", pairs=pairs, note=note)


def _work(report: retention.Report, **more: Any) -> Section:
    return Section("work", "Work", pairs={"transactions": report.transactions,
                                          "longest_write_lock_ms": round(report.longest_hold * 1000, 1),
                                          "seconds": round(report.seconds, 2), **more})


def _number(option: str, text: Optional[str], kind: type) -> Any:
    """An option's value, checked as the logger checks it; else one line quoting it and the form expected."""
    if text is None:
        return None
    name = option.lstrip("-").replace("-", "_")
    try:
        value = kind(text)
        if kind is float and math.isnan(value):
            raise ValueError(text)
        retention.Retention.validate(**{"keep_days": None, "keep_rows": None, "max_size_mb": None, name: value})
    except ValueError:
        raise click.ClickException(f"{option} {text!r}: {_EXPECTED[name]}") from None
    return value


# What Retention.validate expects, in the command line's words.
_EXPECTED = {"keep_days": "expected a positive number of days, for example 30",
             "keep_rows": "expected a whole number of at least 1, for example 1000000",
             "max_size_mb": "expected a positive number of megabytes, for example 500 (inf for no size budget)"}


def _unlocked(file: str, work: Callable[[], Any]) -> Any:
    """Run ``work``, turning a lock held past busy_timeout into one line."""
    try:
        return work()
    except sqlite3.OperationalError as error:
        if "locked" in str(error) or "busy" in str(error):
            raise click.ClickException(f"{file}: another connection held the write lock for over 5 s ({error}); "
                                       "what was done so far stays done: run the command again") from None
        raise


class _Bars:
    """A click progress bar per phase, on stderr when it is a terminal (so --json stays clean)."""

    _LABELS = {"rows": "Deleting rows", "vacuum": "Returning space", "convert": "Rewriting the file"}

    def __init__(self):
        self.stream = sys.stderr
        self.phase: Optional[str] = None
        self.bar: Any = None
        self.done = 0

    def __enter__(self) -> "_Bars":
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def update(self, phase: str, done: int, total: int) -> None:
        if not self.stream.isatty():
            return
        if phase != self.phase:
            self._close()
            label = self._LABELS.get(phase) or f"Unused {phase.partition(':')[2]}"
            self.phase, self.done = phase, 0
            self.bar = click.progressbar(length=max(total, 1), label=label, file=self.stream).__enter__()
        self.bar.update(max(0, min(done, total) - self.done))
        self.done = max(self.done, min(done, total))

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
