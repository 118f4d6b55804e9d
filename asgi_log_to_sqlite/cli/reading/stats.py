"""``stats``: the summary of a log a person wants at a glance, from a few grouped scans of request_log."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple
import sqlite3

import click

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
    """

    def __init__(self, conn: sqlite3.Connection, since: Optional[int], until: Optional[int], top: int):
        self.conn, self.since, self.until, self.top = conn, since, until, top
        self.where, self.params = _range(since, until)
        self.first = self.last = self.longest = None
        self.estimated = self.duration_total = 0.0
        self.timed = 0
        self.hours: Dict[int, list] = {}  # hour -> [requests, 1xx..5xx (5), bytes_sent, bytes_received]
        self.paths: Dict[int, list] = {}  # path id -> [requests, timed, duration_us, bytes_sent, {error status: n}]
        self.agents: List[tuple] = []
        self.durations: Dict[str, Optional[float]] = {}

    def steps(self):
        return (self.read_bounds, self.read_hours, self.read_paths, self.read_agents, self.read_durations)

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
            hour, status_class = divmod(key, 10)
            entry = self.hours.setdefault(hour, [0, 0, 0, 0, 0, 0, 0, 0])
            entry[0] += count
            if 1 <= status_class <= 5:
                entry[status_class] += count
            entry[6] += sent
            entry[7] += received

    def read_paths(self) -> None:
        # One group per path, plus one per (path, error status): top paths and top errors from one scan.
        for key, count, timed, duration_us, sent in self.conn.execute(f"""
                SELECT coalesce(path_id, 0) * 1000 + CASE WHEN http_status >= 400 THEN http_status ELSE 0 END AS key,
                    count(*), count(duration_us), total(duration_us), coalesce(sum(body_size), 0)
                FROM request_log {self.where} GROUP BY key""", self.params):
            path_id, status = divmod(key, 1000)
            entry = self.paths.setdefault(path_id, [0, 0, 0, 0, {}])
            entry[0] += count
            entry[1] += timed
            entry[2] += duration_us
            entry[3] += sent
            if status:
                entry[4][status] = count

    def read_agents(self) -> None:
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(user_agents)")}
        is_bot = "ua.is_bot" if "is_bot" in columns else "NULL"  # a version 1 file has no agent classes
        self.agents = self.conn.execute(f"""
            SELECT ua.name, {is_bot}, g.requests FROM (
                SELECT user_agent_id, count(*) AS requests FROM request_log {self.where} GROUP BY user_agent_id
            ) g LEFT JOIN user_agents ua ON ua.id = g.user_agent_id ORDER BY g.requests DESC""", self.params).fetchall()

    def read_durations(self) -> None:
        count = self.timed
        self.durations = dict.fromkeys(("p50", "p95", "p99", "max", "mean"))
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

    # -- the report
    def sections(self, file: str) -> List[Section]:
        requests = sum(h[0] for h in self.hours.values())
        names = self._names("paths", self.paths)
        return [self.summary(file, requests), self.traffic(), self.status(requests), self.top_paths(requests, names),
                self.top_errors(names, 400, "top_4xx_paths", "Top 4xx paths"),
                self.top_errors(names, 500, "top_5xx_paths", "Top 5xx paths"),
                Section("duration_ms", "Duration (ms; exact, nearest rank)", pairs=self.durations),
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
            "distinct_paths": len(self.paths), "distinct_agents": len(self.agents),
        }
        if round(self.estimated) != requests:
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
            c4 = sum(n for status, n in errors.items() if status < 500)
            rows.append((names.get(path_id), count, _share(count, requests), c4, sum(errors.values()) - c4,
                         round(duration_us / timed / 1000, 3) if timed else None, sent))
        return Section("top_paths", "Top paths", ("path", "requests", "share_%", "4xx", "5xx", "mean_ms", "bytes_sent"), rows)

    def top_errors(self, names: Dict[int, str], low: int, key: str, title: str) -> Section:
        counted = []
        for path_id, entry in self.paths.items():
            statuses = {s: n for s, n in entry[4].items() if low <= s < low + 100 or (low == 500 and s >= 600)}
            if statuses:
                counted.append((sum(statuses.values()), path_id, statuses))
        counted.sort(key=lambda item: -item[0])
        rows = [(names.get(path_id), total, ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items(), key=lambda i: -i[1])))
                for total, path_id, statuses in counted[:self.top]]
        return Section(key, title, ("path", "requests", "statuses"), rows)

    def bots(self, requests: int) -> List[Section]:
        kinds = {"human": [0, 0], "bot": [0, 0], "unknown": [0, 0]}  # requests, distinct agents
        for _, is_bot, count in self.agents:
            kind = kinds["unknown" if is_bot is None else "bot" if is_bot else "human"]
            kind[0] += count
            kind[1] += 1
        rows = [(kind, n, _share(n, requests), agents) for kind, (n, agents) in kinds.items()]
        bots = [(_short(name), count) for name, is_bot, count in self.agents if is_bot][:self.top]
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
@click.option("--top", default=10, show_default=True, type=click.IntRange(min=1), help="Rows in each top list")
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


