"""The traffic dashboard of a log database: /<db>/-/dashboard, its data at /<db>/-/dashboard.json.

Every panel is one of the ready-made queries (``queries.QUERIES``) run by name with the page's period, so
what a panel draws is exactly what its query returns in Datasette, where its title links to.
"""
from __future__ import annotations

import asyncio
import datetime
import functools
import json
import pathlib
import time
import urllib.parse
from typing import Dict, List, Optional, Tuple

import markupsafe
from datasette import Forbidden, NotFound, hookimpl
from datasette.database import QueryInterrupted
from datasette.utils import tilde_decode
from datasette.utils.asgi import Response
from datasette.version import __version__ as DATASETTE_VERSION

from ..traffic import LOOPBACK
from .queries import QUERIES
from .recognise import log_schema

DATASETTE_MAJOR = int(DATASETTE_VERSION.split(".")[0])
PAGE_ROUTE = r"^/(?P<database>[^/]+)/-/dashboard$"
DATA_ROUTE = r"^/(?P<database>[^/]+)/-/dashboard\.json$"
STATIC = pathlib.Path(__file__).resolve().parent / "static"
# What the empty page suggests: the bundled traffic generator, which only sends to this machine.
TRAFFIC_COMMAND = "python -m asgi_log_to_sqlite.traffic {origin} --requests 300 --seconds 60"

# The presets of the period control: name -> (label, length).
PRESETS = {
    "24h": ("last 24 hours", datetime.timedelta(hours=24)),
    "7d": ("last 7 days", datetime.timedelta(days=7)),
    "30d": ("last 30 days", datetime.timedelta(days=30)),
}
DEFAULT_PRESET = "7d"
# Past this length the charts over time read daily queries: 720 hourly bars say less than 30 daily
# ones, and over a month the daily rollups are a twenty-fourth of the rows to read.
HOURLY_UP_TO = datetime.timedelta(days=7)

# The panels, in page order: id -> the query it draws, or (hourly, daily) to pick by the period's length.
PANELS = {
    "summary": "summary",
    "traffic": ("traffic_by_hour", "traffic_by_day"),
    "status_over_time": ("status_over_time", "status_by_day"),
    "latency_over_time": ("latency_over_time", "latency_by_day"),
    "top_paths": "top_paths",
    "top_routes": "top_routes",
    "slowest_routes": "slowest_routes",
    "error_paths": "error_paths",
    "bots_and_humans": "bots_and_humans",
    "agents": "agents",
    "referring_sites": "referring_sites",
    "referrers": "referrers",
    "visitors_by_day": "visitors_by_day",
    "bytes_served": "bytes_served",
    "last_requests": "last_requests",
}
# Queries also run over the previous period: the KPI deltas and the traffic chart's comparison line.
COMPARED = ("summary", "traffic", "visitors_by_day")
# What the live panel refreshes every few seconds: the KPIs, the traffic chart and the newest requests.
LIVE = ("summary", "traffic", "visitors_by_day", "last_requests")
# The order the page asks for its panels in: the KPIs, the traffic chart and the newest requests first, so
# that on a big log they are not queued behind slower queries on Datasette's few SQL threads; then the
# slowest query, which would otherwise start last and end the load last (docs/dashboard.md).
SLOWEST_FIRST = ("slowest_routes",)
FETCH_ORDER = LIVE + SLOWEST_FIRST + tuple(panel for panel in PANELS if panel not in LIVE + SLOWEST_FIRST)


class PeriodError(ValueError):
    """A period parameter that is not an ISO date or datetime, or a range that ends before it starts."""


# ---- the period ------------------------------------------------------------------------------------

def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def parse_time(value: str, name: str, *, end: bool = False) -> datetime.datetime:
    """An ISO date or datetime as UTC; a bare date as ``end`` is the end of that day (the day is included)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text)
            moment = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)
            return moment + datetime.timedelta(days=1) if end else moment
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
        raise PeriodError(
            f"{name}={value!r} is not a date or datetime: expected ISO 8601, like 2026-12-01 or 2026-12-01T14:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def query_time(moment: datetime.datetime) -> str:
    """A moment as the queries' ``start`` and ``end`` take it: ISO 8601 in UTC, to the second."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def custom_label(start: datetime.datetime, end: datetime.datetime) -> str:
    """A custom period as a person reads it: whole days as dates (the last one included), else times."""
    if start.time() == end.time() == datetime.time(0):
        last = (end - datetime.timedelta(days=1)).date()
        return str(last) if last == start.date() else f"{start.date()} to {last}"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"


class Period:
    """The page's period [start, end) and the previous one of the same length, from the URL's parameters."""

    def __init__(self, start: datetime.datetime, end: datetime.datetime, preset: Optional[str], label: str):
        self.start, self.end, self.preset, self.label = start, end, preset, label
        try:
            self.previous_start = start - (end - start)
        except OverflowError:
            raise PeriodError(f"{label}: the previous period of the same length would start before the year 1; "
                              f"expected a later start or a shorter period") from None

    @classmethod
    def from_args(cls, args, now: Optional[datetime.datetime] = None) -> "Period":
        now = now or utc_now()
        start, end = args.get("start") or "", args.get("end") or ""
        if start or end:
            start_at = parse_time(start, "start") if start else None
            # Whole seconds, as the queries get the bounds: the previous period is then exactly as long.
            end_at = parse_time(end, "end", end=True) if end else now.replace(microsecond=0)
            if start_at is None:
                start_at = end_at - PRESETS[DEFAULT_PRESET][1]
            if start_at >= end_at:
                raise PeriodError(f"start={start!r} is not before end={end or 'now'!r}: expected start < end")
            return cls(start_at, end_at, None, custom_label(start_at, end_at))
        preset = args.get("range") or DEFAULT_PRESET
        if preset not in PRESETS:
            raise PeriodError(f"range={preset!r} is not a preset: expected one of {', '.join(PRESETS)}")
        label, length = PRESETS[preset]
        # The period ends at the end of the current hour, so hourly bars line up with the rollups' hours.
        end_at = now.replace(minute=0, second=0, microsecond=0) + datetime.timedelta(hours=1)
        return cls(end_at - length, end_at, preset, label)

    def params(self, previous: bool = False) -> Dict[str, str]:
        if previous:
            return {"start": query_time(self.previous_start), "end": query_time(self.start)}
        return {"start": query_time(self.start), "end": query_time(self.end)}

    def query_of(self, panel: str) -> str:
        """The query panel ``panel`` draws for this period."""
        name = PANELS[panel]
        if isinstance(name, tuple):
            return name[0] if self.end - self.start <= HOURLY_UP_TO else name[1]
        return name

    def as_json(self) -> dict:
        return {
            **self.params(), "previous_start": query_time(self.previous_start), "previous_end": query_time(self.start),
            "preset": self.preset, "label": self.label, "traffic_query": self.query_of("traffic"),
        }


# ---- databases and permissions ---------------------------------------------------------------------

def is_log_database(db) -> bool:
    """Whether a database is a log written by asgi-log-to-sqlite, told by its schema (recognise.py)."""
    return log_schema(db) is not None


async def can_view_database(datasette, actor, database: str) -> bool:
    """Datasette's own view-database check, as each line spells it (0.65 also requires view-instance)."""
    if DATASETTE_MAJOR >= 1:
        from datasette.resources import DatabaseResource

        visible, _ = await datasette.check_visibility(
            actor, action="view-database", resource=DatabaseResource(database=database)
        )
    else:
        visible, _ = await datasette.check_visibility(
            actor, permissions=[("view-database", database), "view-instance"]
        )
    return visible


async def query_refusal(datasette, actor, database: str, name: str) -> Optional[str]:
    """Why a panel may not show the ready-made query ``name``, or None when it may: the actor lacks
    view-query on it, or the database holds a query of that name that is not ours (the user's wins)."""
    if DATASETTE_MAJOR >= 1:
        from datasette.resources import QueryResource

        allowed, _ = await datasette.check_visibility(
            actor, action="view-query", resource=QueryResource(database=database, query=name))
        held = await datasette.get_query(database, name)
        sql = held.sql if held is not None else None
    else:
        allowed, _ = await datasette.check_visibility(
            actor, permissions=[("view-query", (database, name)), ("view-database", database), "view-instance"])
        held = await datasette.get_canned_query(database, name, actor)
        sql = held.get("sql") if held else None
    if not allowed:
        return f"you do not have permission to view the query {name}"
    if sql is not None and sql.strip() != QUERIES[name]["sql"].strip():
        return f"this database's query {name} is its own, not the ready-made one this panel draws"
    return None


async def log_database(datasette, request):
    """The log database the URL names, once the actor may view it: 404 for no such log, 403 if not allowed."""
    route = tilde_decode(request.url_vars["database"])
    try:
        db = datasette.get_database(route=route)
    except KeyError:
        raise NotFound(f"Database not found: {route}")
    if not await can_view_database(datasette, request.actor, db.name):
        raise Forbidden("You do not have permission to view this database")
    if not is_log_database(db):
        raise NotFound(f"{db.name} is not a log database written by asgi-log-to-sqlite: it has no dashboard")
    return db


def dashboard_url(datasette, database: str, query: Optional[Dict[str, str]] = None) -> str:
    url = datasette.urls.database(database) + "/-/dashboard"
    return url + ("?" + urllib.parse.urlencode(query) if query else "")


def query_url(datasette, database: str, name: str, params: Dict[str, str]) -> str:
    """The ready-made query's page in Datasette with the panel's parameters: its rows, SQL and CSV."""
    return datasette.urls.query(database, name) + "?" + urllib.parse.urlencode(params)


# ---- running the panels ----------------------------------------------------------------------------

def query_params(name: str, period_params: Dict[str, str], path_prefix: str) -> Dict[str, str]:
    """The parameters the query declares, from the period and the path filter ('' is the query's default)."""
    given = {**period_params, "path_prefix": path_prefix}
    return {param: given.get(param, "") for param in QUERIES[name]["params"]}


async def run_query(datasette, db, name: str, params: Dict[str, str], actor=None) -> dict:
    """One query's rows as a panel draws them, or the error that stopped it (a panel fails alone).

    Only where ``actor`` may view that query in Datasette, and only while it is ours.
    """
    began = time.perf_counter()
    query = QUERIES[name]  # panels name ready-made queries only
    panel = {"query": name, "title": query["title"], "description": query.get("description", ""),
             "url": query_url(datasette, db.name, name, params), "columns": [], "rows": [], "error": None}
    refused = await query_refusal(datasette, actor, db.name, name)
    if refused is not None:
        panel["error"] = refused
        panel["ms"] = round((time.perf_counter() - began) * 1000, 1)
        return panel
    try:
        results = await db.execute(query["sql"], params)
    except QueryInterrupted:
        limit = datasette.setting("sql_time_limit_ms")
        panel["error"] = (f"{name} took longer than Datasette's time limit ({limit:,} ms): "
                          f"a shorter period, or --setting sql_time_limit_ms {limit * 5}, lets it finish")
    except Exception as error:  # the panel shows what went wrong; the others still draw
        panel["error"] = f"{name} failed: {error}"
    else:
        panel["columns"] = list(results.columns)
        panel["rows"] = [list(row) for row in results.rows]
    panel["ms"] = round((time.perf_counter() - began) * 1000, 1)
    return panel


def has_traffic(panel: dict) -> bool:
    """Whether a panel shows any request: summary is one row even for none, counting them in ``requests``."""
    if panel["query"] == "summary" and panel["rows"]:
        return bool(panel["rows"][0][panel["columns"].index("requests")])
    return bool(panel["rows"])


async def panel_data(datasette, db, period: Period, path_prefix: str = "", only: Optional[List[str]] = None,
                     actor=None) -> dict:
    """Every panel's rows for the period, and the compared panels' rows for the previous period.

    The queries run concurrently, on Datasette's pool of SQL threads.
    """
    wanted = [panel for panel in PANELS if only is None or panel in only]
    jobs: List[Tuple[str, bool, str, Dict[str, str]]] = []
    for panel in wanted:
        name = period.query_of(panel)
        jobs.append((panel, False, name, query_params(name, period.params(), path_prefix)))
        if panel in COMPARED:
            jobs.append((panel, True, name, query_params(name, period.params(previous=True), path_prefix)))
    began = time.perf_counter()
    results = await asyncio.gather(*(run_query(datasette, db, name, params, actor) for _, _, name, params in jobs))
    data = {"database": db.name, "period": period.as_json(), "path_prefix": path_prefix,
            "panels": {}, "previous": {}}
    for (panel, previous, *_), result in zip(jobs, results):
        data["previous" if previous else "panels"][panel] = result
    data["empty"] = not any(has_traffic(panel) for panel in data["panels"].values())
    data["ms"] = round((time.perf_counter() - began) * 1000, 1)
    return data


# ---- the views -------------------------------------------------------------------------------------

async def dashboard_data(datasette, request):
    db = await log_database(datasette, request)
    try:
        period = Period.from_args(request.args)
    except PeriodError as error:
        return Response.json({"ok": False, "error": str(error)}, status=400)
    only = [p for p in (request.args.get("panels") or "").split(",") if p] or None
    unknown = [p for p in only or [] if p not in PANELS]
    if unknown:
        return Response.json(
            {"ok": False, "error": f"panels={','.join(unknown)!r}: expected names among {', '.join(PANELS)}"},
            status=400,
        )
    data = await panel_data(datasette, db, period, request.args.get("path_prefix") or "", only, request.actor)
    return Response.json({"ok": True, **data})


def preset_links(datasette, database: str, path_prefix: str) -> List[dict]:
    extra = {"path_prefix": path_prefix} if path_prefix else {}
    return [{"name": name, "label": label, "short": name.replace("h", " h").replace("d", " d"),
             "href": dashboard_url(datasette, database, {"range": name, **extra})}
            for name, (label, _) in PRESETS.items()]


async def dashboard_page(datasette, request):
    db = await log_database(datasette, request)
    path_prefix = request.args.get("path_prefix") or ""
    error = None
    try:
        period = Period.from_args(request.args)
    except PeriodError as bad:
        error, period = str(bad), Period.from_args({})
    query = {key: request.args.get(key) for key in ("range", "start", "end") if request.args.get(key)}
    config = {
        "database": db.name,
        "data_url": datasette.urls.database(db.name) + "/-/dashboard.json",
        "query_string": urllib.parse.urlencode({**query, **({"path_prefix": path_prefix} if path_prefix else {})}),
        "period": period.as_json(),
        "panels": list(FETCH_ORDER),
        "live_panels": list(LIVE),
    }
    context = {
        "database": db.name,
        "period": period,
        "period_error": error,
        "path_prefix": path_prefix,
        "dashboard_path": dashboard_url(datasette, db.name),
        "without_path_prefix": dashboard_url(datasette, db.name, query),
        "presets": preset_links(datasette, db.name, path_prefix),
        "custom_start": period.start.date().isoformat(),
        "custom_end": (period.end - datetime.timedelta(seconds=1)).date().isoformat(),
        "database_url": datasette.urls.database(db.name),
        "panels": {panel: panel_link(datasette, db.name, period.query_of(panel), period, path_prefix)
                   for panel in PANELS},
        "config_json": markupsafe.Markup(json.dumps(config).replace("</", "<\\/")),
        "chart_js_url": datasette.urls.static_plugins(static_plugin_name(), "chart.umd.min.js"),
        "dashboard_js_url": datasette.urls.static_plugins(static_plugin_name(), "dashboard.js"),
        "dashboard_css_url": datasette.urls.static_plugins(static_plugin_name(), "dashboard.css"),
        "traffic_command": traffic_command(request),
    }
    html = await datasette.render_template("log_dashboard.html", context, request=request)
    return Response.html(html, status=400 if error else 200)


def traffic_command(request) -> str:
    """The traffic generator's command line, aimed at this server when it listens on this machine."""
    host = urllib.parse.urlsplit("//" + request.host).hostname
    origin = f"{request.scheme}://{request.host}" if host in LOOPBACK else "http://127.0.0.1:8001"
    return TRAFFIC_COMMAND.format(origin=origin)


def panel_link(datasette, database: str, name: str, period: Period, path_prefix: str) -> dict:
    """A panel's title and the link to its query with the page's parameters, before any data is fetched."""
    query = QUERIES[name]
    return {"title": query["title"], "description": query["description"],
            "url": query_url(datasette, database, name, query_params(name, period.params(), path_prefix))}


@functools.lru_cache(maxsize=None)
def static_plugin_name() -> str:
    """The name Datasette serves this package's static/ under (its distribution's name, once installed)."""
    from datasette.plugins import get_plugins

    for plugin in get_plugins():
        if plugin.get("static_path") and pathlib.Path(plugin["static_path"]).resolve() == STATIC:
            return plugin["name"]
    raise RuntimeError(f"no registered Datasette plugin serves {STATIC}: is asgi_log_to_sqlite.datasette loaded?")


# ---- hooks -----------------------------------------------------------------------------------------

@hookimpl
def register_routes():
    return [(DATA_ROUTE, dashboard_data), (PAGE_ROUTE, dashboard_page)]


@hookimpl
def database_actions(datasette, actor, database, request):
    if not is_log_database(datasette.get_database(database)):
        return None
    return [{"href": dashboard_url(datasette, database), "label": "Traffic dashboard",
             "description": "Charts of this log's requests, each linked to its query."}]


@hookimpl
def top_database(datasette, request, database):
    if not is_log_database(datasette.get_database(database)):
        return None
    return markupsafe.Markup(
        '<p class="log-dashboard-link"><a href="{}">Traffic dashboard</a>: requests, status, latency, '
        "referrers and agents over time, each chart linked to its query.</p>"
    ).format(dashboard_url(datasette, database))
