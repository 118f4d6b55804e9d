"""``stats``: the summary of a log a person wants at a glance, from a few grouped scans of request_log."""
from __future__ import annotations

import sqlite3
from typing import Dict, List, Optional, Tuple

import click

from ... import rollups
from .. import cli
from ..output import Section, emit_sections, iso_ms, open_log, output_options, progress, time_option
from .reasons import meaning

_HOUR_MS = 3_600_000
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def _range(since: Optional[int], until: Optional[int], column: str = "start_ms") -> Tuple[str, list]:
    """A WHERE clause for [since, until) on ``column``, and its parameters."""
    clauses, params = [], []
    if since is not None:
        clauses.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        clauses.append(f"{column} < ?")
        params.append(until)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _share(part: int, whole: int) -> Optional[float]:
    return round(100.0 * part / whole, 1) if whole else None


def _short(text: Optional[str], limit: int = 80) -> Optional[str]:
    return text if text is None or len(text) <= limit else text[:limit - 1] + "…"


class _Stats:
    """The queries behind ``stats``: a few scans of request_log over [since, until), each one GROUP BY.

    A GROUP BY sorts every row it reads, and the sorter's cost grows with each column it carries:
    so each scan groups by one integer key that packs two (hour and status class, path and error
    status), which measured twice as fast as grouping by the two columns.

    Where retention has pruned raw rows, the hourly rollups still count them: the whole hours of
    the range up to the last one that has fewer raw rows than its rollups count are read from
    rollup_hourly instead (``self.pruned``), and the raw scans skip them.
    """

    def __init__(self, conn: sqlite3.Connection, since: Optional[int], until: Optional[int], top: int):
        self.conn, self.since, self.until, self.top = conn, since, until, top
        self.where, self.params = _range(since, until)
        self.raw_where, self.raw_params = self.where, self.params  # the raw rows the rollups do not stand for
        self.pruned: Optional[Tuple[int, int]] = None  # [first, last) hours read from rollup_hourly
        self.first = self.last = self.longest = None
        self.estimated = self.duration_total = 0.0
        self.timed = 0
        self.hours: Dict[int, list] = {}  # hour -> [requests, 1xx..5xx (5), bytes_sent, bytes_received]
        self.paths: Dict[int, list] = {}  # path id -> [requests, timed, duration_us, bytes_sent, {error status: n}]
        self.agents: List[tuple] = []
        self.durations: Dict[str, Optional[float]] = {}
        self.durations_from = "exact, nearest rank"

    def steps(self):
        return (self.read_bounds, self.read_hours, self.read_pruned_hours, self.read_paths, self.read_agents,
                self.read_durations)

    def read_bounds(self) -> None:
        self.first, self.last, self.estimated, self.timed, self.duration_total, self.longest = self.conn.execute(
            f"SELECT min(start_ms), max(start_ms), total(1.0 / sample_rate), count(duration_us), total(duration_us), "
            f"max(duration_us) FROM request_log {self.where}", self.params).fetchone()

    def read_hours(self) -> None:
        # Hours only: days and months are sums of hours, so one scan serves every period.
        for key, count, sent, received in self.conn.execute(f"""
                SELECT start_ms / {_HOUR_MS} * 10 + coalesce(http_status / 100, 0) AS key, count(*),
                    coalesce(sum(body_size), 0), coalesce(sum(request_size), 0)
                FROM request_log {self.where} GROUP BY key""", self.params):
            if key is None:
                # start_ms is NOT NULL: only a damaged page reads back NULL, and SQLite did not notice.
                raise sqlite3.DatabaseError("database disk image is malformed (request_log has a row with no "
                                            "start time); run `asgi-log-to-sqlite check`")
            hour, status_class = divmod(key, 10)
            entry = self.hours.setdefault(hour, [0, 0, 0, 0, 0, 0, 0, 0])
            entry[0] += count
            if 1 <= status_class <= 5:
                entry[status_class] += count
            entry[6] += sent
            entry[7] += received

    def read_pruned_hours(self) -> None:
        """Find the hours whose raw rows were pruned, and take their counts from the rollups."""
        if getattr(rollups, "percentiles", None) is None or not self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'rollup_hourly'").fetchone():
            return
        # Whole hours only: an hour the range cuts has rollups for rows outside the range.
        low = None if self.since is None else -(-self.since // _HOUR_MS)
        high = None if self.until is None else self.until // _HOUR_MS
        where, params = _range(low, high, "hour")
        kept: Dict[int, list] = {}
        for hour, status_class, hits, sent in self.conn.execute(
                f"SELECT hour, status_class, sum(hits), sum(bytes) FROM rollup_hourly {where} "
                f"GROUP BY hour, status_class", params):
            entry = kept.setdefault(hour, [0, 0, 0, 0, 0, 0, 0, 0])  # as self.hours; bytes received unknown
            entry[0] += hits
            if 1 <= status_class <= 5:
                entry[status_class] += hits
            entry[6] += sent
        pruned = [hour for hour, entry in kept.items() if entry[0] > self.hours.get(hour, (0,))[0]]
        if not pruned:
            return
        first, last = min(kept) if low is None else low, max(pruned) + 1
        self.pruned = (first, last)
        for hour in range(first, last):
            if hour in kept:
                self.hours[hour] = kept[hour]
            else:
                self.hours.pop(hour, None)
        self.raw_where = (self.where + " AND" if self.where else "WHERE") + " NOT (start_ms >= ? AND start_ms < ?)"
        self.raw_params = self.params + [first * _HOUR_MS, last * _HOUR_MS]

    def _rollups_in(self, select: str, group: str = "") -> List[tuple]:
        first, last = self.pruned
        return self.conn.execute(f"SELECT {select} FROM rollup_hourly WHERE hour >= ? AND hour < ? {group}",
                                 (first, last)).fetchall()

    def read_paths(self) -> None:
        # One group per path, plus one per (path, error status): top paths and top errors from one scan.
        for key, count, timed, duration_us, sent in self.conn.execute(f"""
                SELECT coalesce(path_id, 0) * 1000 + CASE WHEN http_status >= 400 THEN http_status ELSE 0 END AS key,
                    count(*), count(duration_us), total(duration_us), coalesce(sum(body_size), 0)
                FROM request_log {self.raw_where} GROUP BY key""", self.raw_params):
            path_id, status = divmod(key, 1000)
            self._add_path(path_id, status, count, timed, duration_us, sent)
        if self.pruned:
            # Rollups are kept per route where the request had one, else per path: routes get negative keys.
            for route_id, path_id, status_class, hits, timed, duration_us, sent in self._rollups_in(
                    "route_id, path_id, status_class, sum(hits), sum(CASE WHEN bucket >= 0 THEN hits ELSE 0 END), "
                    "sum(duration_us_sum), sum(bytes)", "GROUP BY route_id, path_id, status_class"):
                self._add_path(-route_id if route_id else path_id, status_class if status_class >= 4 else 0,
                               hits, timed, duration_us, sent)

    def _add_path(self, key: int, status: int, count: int, timed: int, duration_us: float, sent: int) -> None:
        """Add to a path's totals; ``status`` is an error status (404), an error class (4) or 0."""
        entry = self.paths.setdefault(key, [0, 0, 0, 0, {}])
        entry[0] += count
        entry[1] += timed
        entry[2] += duration_us
        entry[3] += sent
        if status:
            entry[4][status] = entry[4].get(status, 0) + count

    def read_agents(self) -> None:
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(user_agents)")}
        is_bot = "ua.is_bot" if "is_bot" in columns else "NULL"  # a version 1 file has no agent classes
        self.agents = self.conn.execute(f"""
            SELECT ua.name, {is_bot}, g.requests FROM (
                SELECT user_agent_id, count(*) AS requests FROM request_log {self.raw_where} GROUP BY user_agent_id
            ) g LEFT JOIN user_agents ua ON ua.id = g.user_agent_id ORDER BY g.requests DESC""", self.raw_params).fetchall()
        if self.pruned:
            # The rollups keep the bot flag only, an unknown agent counted as not a bot.
            self.agents += [(None, "rollup bot" if is_bot else "rollup other", hits)
                            for is_bot, hits in self._rollups_in("is_bot, sum(hits)", "GROUP BY is_bot")]

    def read_durations(self) -> None:
        self.durations = dict.fromkeys(("p50", "p95", "p99", "max", "mean"))
        if self.pruned:
            self.rollup_durations()
            return
        count = self.timed
        if not count:
            return
        # Exact nearest-rank percentiles: one sort (SQLite's sorter spills to disk), read at three ranks.
        ranks = {name: max(1, -(-count * share // 100)) for name, share in (("p50", 50), ("p95", 95), ("p99", 99))}
        where = (self.where + " AND" if self.where else "WHERE") + " duration_us IS NOT NULL"
        found = dict(self.conn.execute(f"""
            SELECT rank, duration_us FROM (
                SELECT duration_us, row_number() OVER (ORDER BY duration_us) AS rank FROM request_log {where}
            ) WHERE rank IN (?, ?, ?)""", self.params + list(ranks.values())))
        for name, rank in ranks.items():
            self.durations[name] = round(found[rank] / 1000, 3)
        self.durations["max"] = round(self.longest / 1000, 3)
        self.durations["mean"] = round(self.duration_total / count / 1000, 3)

    def rollup_durations(self) -> None:
        """Percentiles from the rollups' latency buckets, over every hour the range touches."""
        self.durations_from = "from hourly rollups: raw rows were pruned; each within 5%"
        where, params = _range(None if self.since is None else self.since // _HOUR_MS,
                               None if self.until is None else -(-self.until // _HOUR_MS), "hour")
        found = rollups.percentiles(self.conn, self.since, self.until, (0.5, 0.95, 0.99))
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            self.durations[name] = None if found.get(q) is None else round(found[q] / 1000, 3)
        total, timed, longest = self.conn.execute(
            f"SELECT total(duration_us_sum), sum(CASE WHEN bucket >= 0 THEN hits ELSE 0 END), max(duration_us_max) "
            f"FROM rollup_hourly {where}", params).fetchone()
        if timed:
            self.durations["max"] = round(longest / 1000, 3)
            self.durations["mean"] = round(total / timed / 1000, 3)

    # -- the report
    def sections(self, file: str) -> List[Section]:
        requests = sum(h[0] for h in self.hours.values())
        names = self._names("paths", [key for key in self.paths if key > 0])
        names.update({-key: name for key, name in self._names("routes", [-key for key in self.paths if key < 0]).items()})
        return [self.summary(file, requests), self.traffic(), self.status(requests), self.top_paths(requests, names),
                self.top_errors(names, 400, "top_4xx_paths", "Top 4xx paths"),
                self.top_errors(names, 500, "top_5xx_paths", "Top 5xx paths"),
                Section("duration_ms", f"Duration (ms; {self.durations_from})", pairs=self.durations),
                *self.bots(requests), self.lost()]

    def summary(self, file: str, requests: int) -> Section:
        lower = self.since if self.since is not None else self.first
        upper = self.until if self.until is not None else self.last
        seconds = max((upper - lower) / 1000, 1) if lower is not None and upper is not None else None
        busiest = max(self.hours.items(), key=lambda item: item[1][0], default=None)
        pairs = {
            "first_request": iso_ms(self.first), "last_request": iso_ms(self.last), "requests": requests,
            "requests_per_second": round(requests / seconds, 3) if seconds else None,
            "busiest_hour": iso_ms(busiest[0] * _HOUR_MS)[:13] + ":00" if busiest else None,
            "busiest_hour_requests": busiest[1][0] if busiest else None,
            "bytes_sent": sum(h[6] for h in self.hours.values()),
            "bytes_received": sum(h[7] for h in self.hours.values()),
            "distinct_paths": len(self.paths), "distinct_agents": sum(1 for name, *_ in self.agents if name is not None),
        }
        if self.pruned:
            # Raw rows before this were pruned: these hours are counted from the rollups, which keep no
            # request sizes, times to the millisecond or agent names.
            first, last = self.pruned
            pairs["from_rollups"] = f"{iso_ms(first * _HOUR_MS)[:13]}:00 to {iso_ms(last * _HOUR_MS)[:13]}:00"
            pairs["first_request"] = iso_ms(min(first * _HOUR_MS, self.first or first * _HOUR_MS))
        elif round(self.estimated) != requests:
            pairs["estimated_requests"] = round(self.estimated)  # rows were sampled: each weighs 1 / sample_rate
        since = f"since {iso_ms(self.since)}" if self.since is not None else ""
        until = f"until {iso_ms(self.until)}" if self.until is not None else ""
        scope = " ".join(filter(None, (since, until))) or "all rows"
        return Section("summary", f"Summary of {file} ({scope})", pairs=pairs)

    def traffic(self) -> Section:
        hours = sorted(self.hours)
        span = hours[-1] - hours[0] + 1 if hours else 0
        # Hours for up to two days, days up to three months, months beyond: a screenful either way.
        name, width, seconds = ("hour", 13, 3600) if span <= 48 else ("day", 10, 86400) if span <= 92 * 24 \
            else ("month", 7, 30.44 * 86400)
        periods: Dict[str, list] = {}
        for hour in hours:
            entry = self.hours[hour]
            key = iso_ms(hour * _HOUR_MS)[:width] + (":00" if name == "hour" else "")
            total = periods.setdefault(key, [0, 0, 0, 0])  # requests, 4xx, 5xx, bytes sent
            total[0] += entry[0]
            total[1] += entry[4]
            total[2] += entry[5]
            total[3] += entry[6]
        rows = [(key, n, round(n / seconds, 3), c4, c5, sent) for key, (n, c4, c5, sent) in periods.items()]
        return Section("traffic", f"Traffic per {name} (UTC)",
                       ("period", "requests", "per_second", "4xx", "5xx", "bytes_sent"), rows)

    def status(self, requests: int) -> Section:
        counts = {name: sum(h[i] for h in self.hours.values()) for i, name in enumerate(_STATUS_CLASSES, 1)}
        counts["other"] = requests - sum(counts.values())  # no response sent (flag 64), or outside 100-599
        shown = ("2xx", "3xx", "4xx", "5xx")
        rows = [(name, n, _share(n, requests)) for name, n in counts.items() if n or name in shown]
        return Section("status", "Status", ("class", "requests", "share_%"), rows)

    def top_paths(self, requests: int, names: Dict[int, str]) -> Section:
        ranked = sorted(self.paths.items(), key=lambda item: -item[1][0])[:self.top]
        rows = []
        for path_id, (count, timed, duration_us, sent, errors) in ranked:
            c4 = sum(n for status, n in errors.items() if status == 4 or 400 <= status < 500)
            rows.append((names.get(path_id), count, _share(count, requests), c4, sum(errors.values()) - c4,
                         round(duration_us / timed / 1000, 3) if timed else None, sent))
        return Section("top_paths", "Top paths", ("path", "requests", "share_%", "4xx", "5xx", "mean_ms", "bytes_sent"), rows)

    def top_errors(self, names: Dict[int, str], low: int, key: str, title: str) -> Section:
        counted = []
        wanted = low // 100
        for path_id, entry in self.paths.items():
            # A status (404), or a class (4) where the rollups of pruned hours keep no more.
            statuses = {s: n for s, n in entry[4].items() if min(s if s < 10 else s // 100, 5) == wanted}
            if statuses:
                counted.append((sum(statuses.values()), path_id, statuses))
        counted.sort(key=lambda item: -item[0])
        rows = [(names.get(path_id), total, ", ".join(f"{s if s >= 10 else f'{s}xx'}: {n}"
                                                      for s, n in sorted(statuses.items(), key=lambda i: -i[1])))
                for total, path_id, statuses in counted[:self.top]]
        return Section(key, title, ("path", "requests", "statuses"), rows)

    def bots(self, requests: int) -> List[Section]:
        kinds = {"human": [0, 0], "bot": [0, 0], "unknown": [0, 0]}  # requests, distinct agents
        pruned = {"rollup bot": 0, "rollup other": 0}
        for name, is_bot, count in self.agents:
            if is_bot in pruned:
                pruned[is_bot] += count
                continue
            kind = kinds["unknown" if is_bot is None else "bot" if is_bot else "human"]
            kind[0] += count
            kind[1] += 1
        rows = [(kind, n, _share(n, requests), agents) for kind, (n, agents) in kinds.items()]
        if self.pruned:
            rows += [("bot, pruned hours", pruned["rollup bot"], _share(pruned["rollup bot"], requests), None),
                     ("not a bot, pruned hours", pruned["rollup other"], _share(pruned["rollup other"], requests), None)]
        bots = [(_short(name), count) for name, is_bot, count in self.agents if is_bot and name is not None][:self.top]
        return [Section("agents", "Bots and humans", ("kind", "requests", "share_%", "agents"), rows,
                        note="  unknown: no User-Agent, or an agent not classified yet (user_agents.is_bot is NULL)"),
                Section("top_bots", "Top bots", ("agent", "requests"), bots)]

    def lost(self) -> Section:
        rows = [(reason, count, iso_ms(first), iso_ms(last), meaning(reason))
                for reason, count, first, last in self.conn.execute(
                    "SELECT reason, count, first_ms, last_ms FROM log_counters ORDER BY count DESC")]
        return Section("not_logged", "Not logged (log_counters, the whole file)",
                       ("reason", "count", "first", "last", "meaning"), rows)

    def _names(self, table: str, ids) -> Dict[int, str]:
        wanted = [i for i in ids if i is not None]
        names: Dict[int, str] = {}
        for start in range(0, len(wanted), 500):  # under SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            names.update(self.conn.execute(
                f"SELECT id, name FROM {table} WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
        return names


@cli.command()
@click.argument("file")
@time_option("--since", end=False, help="Only requests from WHEN on: 2024-05-01, 2024-05-01T12:00, or an age: 24h, 7d")
@time_option("--until", end=True, help="Only requests before WHEN (a bare date includes that day)")
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), metavar="N", help="Rows in each top list")
@output_options
def stats(file: str, since: Optional[int], until: Optional[int], top: int, fmt: str) -> None:
    """A log at a glance: traffic, status mix, top paths and errors, latency, bots, what was lost.

    Times are UTC unless they carry an offset. --csv prints one value per line: section, key (the
    row's first column), metric, value.

    Example:

    \b
        asgi-log-to-sqlite stats logs/requests.db --since 7d --top 5
    """
    if since is not None and until is not None and since >= until:
        raise click.ClickException(f"--since {iso_ms(since)} is not before --until {iso_ms(until)}")
    conn = open_log(file)
    try:
        report = _Stats(conn, since, until, top)
        conn.execute("BEGIN")  # one snapshot: every section counts the same rows
        with progress(report.steps(), "Reading the log") as steps:
            for step in steps:
                step()
        sections = report.sections(file)
        conn.execute("COMMIT")
    finally:
        conn.close()
    emit_sections(sections, fmt, {"file": file, "since": iso_ms(since), "until": iso_ms(until)})


