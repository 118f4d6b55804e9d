"""Dated log files: a ``file`` such as ``logs/{hostname}-%Y-%m.db`` names one file per period.

Each row goes to the file of its request's start time (UTC). The period is the smallest unit the
pattern names (a month for ``%Y-%m``, an hour when ``%H`` is there), so every writer in every
process switches files at the same instants without talking to the others. Old files are whole,
ordinary log databases; ``keep_files`` deletes all but the newest N.
"""
from __future__ import annotations

import calendar
import datetime
import os
import re
import socket
import time
from typing import Dict, List, Optional, Tuple

# Directives a pattern may use, and the period each one implies, shortest first.
_SECOND, _MINUTE, _HOUR, _DAY, _WEEK, _MONTH, _YEAR = range(7)
_DIRECTIVES = {
    "S": _SECOND, "M": _MINUTE, "H": _HOUR, "d": _DAY, "j": _DAY, "V": _WEEK, "m": _MONTH, "Y": _YEAR,
    "G": _YEAR,
}
# What each directive looks like in a file name, to find the files a pattern made.
_DIGITS = {"S": 2, "M": 2, "H": 2, "d": 2, "j": 3, "V": 2, "m": 2, "Y": 4, "G": 4}
_FIXED_MS = {_SECOND: 1_000, _MINUTE: 60_000, _HOUR: 3_600_000, _DAY: 86_400_000, _WEEK: 7 * 86_400_000}
_HOST = "{hostname}"


def is_dated(file: str) -> bool:
    """Whether ``file`` is a pattern (it holds a % directive or {hostname}) rather than one path."""
    return _HOST in file or re.search(r"%[^%]", file.replace("%%", "")) is not None


def hostname() -> str:
    """This machine's name as it goes into a file name: the short host name, path separators removed."""
    name = socket.gethostname().split(".")[0] or "localhost"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


class DatedPath:
    """The files of one pattern: which one a start time belongs to, and which ones exist."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.template = pattern.replace(_HOST, hostname())
        directives = re.findall(r"%(.)", self.template.replace("%%", ""))
        unknown = sorted({d for d in directives if d not in _DIRECTIVES})
        if unknown:
            raise ValueError(
                f"file={pattern!r}: unsupported directive(s) {', '.join('%' + d for d in unknown)}; "
                "use %Y, %m, %d, %H (and %j, %G-%V for ISO weeks, %M or %S for short periods)")
        if not directives:
            self.period: Optional[int] = None  # {hostname} alone: one file per host
        else:
            self.period = min(_DIRECTIVES[d] for d in directives)
        if any(d == "V" for d in directives) and "G" not in directives:
            raise ValueError(f"file={pattern!r}: %V (ISO week) needs %G (ISO year) beside it, as in %G-W%V")
        missing = _missing_units(set(directives), self.period)
        if missing:
            raise ValueError(f"file={pattern!r}: without {missing} the same file name comes back every "
                             "period; name every larger unit, as in logs/requests-%Y-%m-%d.db")
        self._matcher = _matcher(self.template)

    def root_file(self) -> str:
        """A file path in the pattern's deepest fixed directory: what must exist and be writable up front."""
        return os.path.join(_fixed_root(self.template), "log.db")

    def path_for(self, start_ms: float) -> str:
        """The file of a request that started at ``start_ms`` (milliseconds since the epoch)."""
        when = time.gmtime(start_ms / 1000)
        return time.strftime(self.template, when)

    def bounds(self, start_ms: float) -> Tuple[float, float]:
        """[first, last) milliseconds of the period holding ``start_ms``: every start in it shares a file."""
        period = self.period
        if period is None:
            return float("-inf"), float("inf")
        fixed = _FIXED_MS.get(period)
        if fixed is not None:
            if period == _WEEK:
                day = start_ms - start_ms % 86_400_000
                # The epoch was a Thursday; ISO weeks start on Monday.
                first = day - ((int(day // 86_400_000) + 3) % 7) * 86_400_000
                return first, first + fixed
            first = start_ms - start_ms % fixed
            return first, first + fixed
        moment = datetime.datetime.fromtimestamp(start_ms / 1000, datetime.timezone.utc)
        if period == _MONTH:
            first_day = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            year, month = (first_day.year + 1, 1) if first_day.month == 12 else (first_day.year, first_day.month + 1)
            following = first_day.replace(year=year, month=month)
        else:
            first_day = moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
            following = first_day.replace(year=first_day.year + 1)
        return calendar.timegm(first_day.timetuple()) * 1000.0, calendar.timegm(following.timetuple()) * 1000.0

    def existing(self) -> List[str]:
        """The files this pattern has made on this host, oldest period first (names sort by date)."""
        found = []
        root = _fixed_root(self.template)
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, root)
                if self._matcher.fullmatch(relative):
                    found.append(path)
        return sorted(found, key=self._sort_key)

    def delete_beyond(self, keep: int, current: str) -> List[str]:
        """Delete all but the newest ``keep`` files (never ``current``), each with its -wal and -shm."""
        files = [path for path in self.existing() if os.path.abspath(path) != os.path.abspath(current)]
        # ``current`` counts as one of the kept files.
        doomed = files[:max(0, len(files) - (keep - 1))]
        for path in doomed:
            for suffix in ("-wal", "-shm", ""):
                try:
                    os.remove(path + suffix)
                except FileNotFoundError:
                    pass
        return doomed

    def _sort_key(self, path: str) -> tuple:
        match = self._matcher.fullmatch(os.path.relpath(path, _fixed_root(self.template)))
        if match is None:
            return (path,)
        values = match.groupdict()
        return tuple(int(values.get(name) or 0) for name in ("Y", "G", "m", "V", "j", "d", "H", "M", "S"))


def split_by_file(dated: DatedPath, current_file: Optional[str], current: Tuple[float, float], batch: List[tuple],
                  wall_offset: float) -> List[Tuple[str, Tuple[float, float], List[tuple]]]:
    """A writer's batch as (file, period, records), oldest period first, so the writer ends on the newest.

    ``current`` is the period of ``current_file``, the one the writer has open: its records need no
    strftime. ``wall_offset`` turns a record's perf_counter start (record[2]) into wall-clock time.
    """
    first, last = current
    here: List[tuple] = []
    others: Dict[str, list] = {}
    for record in batch:
        start_ms = (record[2] + wall_offset) * 1000
        if first <= start_ms < last:
            here.append(record)
        else:
            file = dated.path_for(start_ms)
            group = others.get(file)
            if group is None:
                group = others[file] = [dated.bounds(start_ms), []]
            group[1].append(record)
    groups = [(file, period, records) for file, (period, records) in others.items()]
    if here:
        groups.append((current_file, current, here))
    return sorted(groups, key=lambda group: group[1][0])


def _missing_units(directives: set, period: Optional[int]) -> str:
    """The directives a pattern lacks to give each period a name of its own, or ''."""
    if period is None:
        return ""
    if period == _WEEK:
        return "" if {"G", "V"} <= directives else "%G"
    needed = []
    if not directives & {"Y", "G"}:
        needed.append("%Y")
    if period <= _MONTH and "j" not in directives and "m" not in directives:
        needed.append("%m")
    if period <= _DAY and "j" not in directives and "d" not in directives:
        needed.append("%d")
    for unit, name in ((_HOUR, "H"), (_MINUTE, "M")):
        if period < unit and name not in directives:
            needed.append("%" + name)
    return " and ".join(needed)


def _fixed_root(template: str) -> str:
    """The deepest directory of the template with no directive in it: where its files are looked for."""
    head = template.split("%")[0]
    root = os.path.dirname(head) if not head.endswith(os.sep) else head.rstrip(os.sep)
    return root or "."


def _matcher(template: str) -> "re.Pattern[str]":
    """A regex matching the names (relative to _fixed_root) that ``template`` produces."""
    relative = os.path.relpath(template, _fixed_root(template))
    parts = []
    seen = set()
    for piece in re.split(r"(%%|%.)", relative):
        if piece == "%%":
            parts.append("%")
        elif len(piece) == 2 and piece[0] == "%":
            name = piece[1]
            digits = r"\d{%d}" % _DIGITS[name]
            if name in seen:
                parts.append(f"(?P={name})")
            else:
                seen.add(name)
                parts.append(f"(?P<{name}>{digits})")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))
