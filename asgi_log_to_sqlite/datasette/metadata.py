"""What Datasette shows of a log: a description of every table, view and column, labels, facets, order.

One source of truth for both Datasette lines: ``registration.py`` hands these to 0.65's
``get_metadata`` hook, or writes them into 1.0's internal metadata tables and ``datasette.config``.
The meanings are those of docs/schema.md (and docs/import.md, docs/files.md for the tables the
commands add), said in a line each.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional

from markupsafe import escape

from .. import toplists
from ..schema import LOOKUPS

# What each lookup table holds (docs/schema.md, "Lookup tables").
_LOOKUP_HOLDS = {
    "paths": "request path, decoded, as the app saw it",
    "query_strings": "query string with its leading ?, secrets redacted",
    "user_agents": "User-Agent header",
    "referers": "Referer header, its query part redacted like the query string",
    "accept_languages": "Accept-Language header",
    "content_types": "response Content-Type",
    "methods": "request method (GET, POST, ...), or WEBSOCKET for a websocket session",
    "client_ips": "client address, as reduced by the client_ip option (truncated by default)",
    "hosts": "Host header",
    "routes": "route template (/items/{item_id}), where the framework gives one",
}

_TOPLIST_VALUES = {
    "hits": "requests",
    "client_errors": "requests answered 4xx",
    "server_errors": "requests answered 5xx",
    "bytes": "response body bytes, summed",
    "duration_us_sum": "durations summed, microseconds (imported lines have none)",
    "timed": "requests with a duration",
}
_ROLLUP_KEY = {
    "route_id": "the route (routes.id); 0 when the request had none",
    "path_id": "the path (paths.id) when there was no route, else 0",
    "method_id": "the method (methods.id)",
    "status_class": "http_status / 100 (2 for 2xx ...); 0 when no response was sent",
    "is_bot": "the agent's bot flag (user_agents.is_bot); 0 when unknown",
    "bucket": "the latency bucket of these requests, log-scale (docs/rollups.md)",
    "hits": "requests",
    "bytes": "response body bytes",
    "duration_us_sum": "total duration of the requests that have one, microseconds (imported rows have none)",
    "duration_us_max": "longest duration, microseconds",
}

_ROLLUP_READABLE = {
    "route": "route template, where the framework gave one",
    "path": "request path, when there was no route",
    "method": "request method",
    "status": "status class: 2xx, 3xx, 4xx, 5xx",
    "is_bot": "1 for programs (crawlers, HTTP libraries, monitors), 0 for people's browsers",
    "hits": "requests",
    "bytes": "response body bytes",
    "timed": "requests with a duration (imported rows have none)",
    "avg_ms": "mean duration of the timed requests, milliseconds",
    "max_ms": "longest duration, milliseconds",
}

_VISITORS = {
    "is_bot": "the agent's bot flag",
    "visitor": "64 bits of a hash of the truncated client address and the agent, salted per day",
}


def _lookup(table: str) -> dict:
    return {
        "description": f"One row per distinct {_LOOKUP_HOLDS[table]}; request_log refers to it by id.",
        "columns": {"id": f"the id request_log uses for this {table[:-1].replace('_', ' ')}",
                    "name": f"the {_LOOKUP_HOLDS[table]}"},
    }


def _described() -> Dict[str, dict]:
    tables: Dict[str, dict] = {table: _lookup(table) for table in LOOKUPS}
    tables["user_agents"]["columns"].update({
        "browser": "ua-parser's browser family (Chrome, Firefox, Other); NULL until classified",
        "os": "ua-parser's OS family (Windows, Android, Other)",
        "device": "desktop, mobile, tablet, bot or other",
        "is_bot": "1 for a program (crawler, HTTP library, monitor), 0 for a browser; NULL unknown",
    })
    tables["request_log"] = {
        "description": "One row per request or websocket session, compact: times are integers, strings are "
                       "ids into the lookup tables. Browse readable_requests for the same rows readable.",
        "columns": {
            "id": "in commit order, close to time order",
            "start_ms": "when the request arrived, milliseconds since the Unix epoch",
            "duration_us": "until the last body byte was sent (or the app returned), microseconds",
            "ttfb_us": "until the response start was sent, microseconds; NULL if none was",
            "method_id": "the method (methods): GET, POST, ...; WEBSOCKET for a session",
            "path_id": "the path (paths), decoded, as the app saw it",
            "query_string_id": "the query string (query_strings), secrets redacted; NULL when empty",
            "user_agent_id": "the User-Agent (user_agents)",
            "referer_id": "the Referer (referers), its query part redacted",
            "accept_language_id": "the Accept-Language header (accept_languages)",
            "http_status": "as sent; 500 = raised before responding; 499 = client left first; NULL = no response",
            "content_type_id": "the response's Content-Type (content_types)",
            "client_ip_id": "the socket peer (client_ips), reduced per client_ip (truncated by default)",
            "forwarded_ip_id": "the address from trusted proxies' headers (client_ips), reduced the same way",
            "host_id": "the Host header (hosts)",
            "route_id": "the route template (routes), where the framework gives one",
            "body_size": "response body bytes handed to the server; 0 for HEAD",
            "request_size": "request body bytes the app read",
            "flags": "bit set: 1 truncated, 2 bytes escaped, 4 app raised, 8 client disconnected, 16 websocket, "
                     "32 excluded but failed, 64 no response, 128 stored as (other), 256 imported",
            "sample_rate": "the sample_rate in force: weight a row by 1 / sample_rate",
            "ws_messages_in": "websocket messages received from the client; NULL for HTTP",
            "ws_messages_out": "websocket messages sent to the client; NULL for HTTP",
            "ws_close_code": "websocket close code, from whichever side closed",
            "request_id": "with request_id=True: the incoming X-Request-ID, or a new 32-hex id",
            "extra": "JSON object of the configured request_headers / response_headers; NULL if none",
        },
    }
    tables["readable_requests"] = {
        "description": "Every request with its strings joined in and its times readable: the view to browse.",
        "columns": {
            "id": "request_log.id: in commit order, close to time order",
            "start": "when the request arrived, ISO 8601 in UTC to the millisecond",
            "method": "request method; WEBSOCKET for a session",
            "host": "the Host header",
            "path": "the decoded path, as the app saw it",
            "query_string": "with its leading ?, secrets redacted; empty when there was none",
            "route": "the route template, where the framework gives one",
            "http_status": "as sent; 500 = raised before responding; 499 = client left first; NULL = no response",
            "content_type": "of the response",
            "duration_ms": "until the last body byte was sent, milliseconds",
            "ttfb_ms": "until the response start was sent, milliseconds",
            "body_size": "response body bytes; 0 for HEAD",
            "request_size": "request body bytes the app read",
            "client_ip": "the socket peer, as reduced by client_ip",
            "forwarded_ip": "from trusted proxies' headers, reduced the same way",
            "user_agent": "the User-Agent header",
            "referer": "the Referer header, its query part redacted",
            "accept_language": "the Accept-Language header",
            "browser": "the agent's browser family (user_agents.browser): Chrome, Firefox, Other",
            "os": "the agent's OS family (user_agents.os): Windows, Android, Other",
            "device": "the agent's device class (user_agents.device): desktop, mobile, tablet, bot or other",
            "is_bot": "1 for a program (crawler, HTTP library, monitor), 0 for a browser; NULL unknown",
            "flags": "bit set, as in request_log.flags",
            "sample_rate": "weight a row by 1 / sample_rate",
            "ws_messages_in": "websocket messages received; websocket sessions only",
            "ws_messages_out": "websocket messages sent; websocket sessions only",
            "ws_close_code": "websocket close code; websocket sessions only",
            "request_id": "the X-Request-ID, with request_id=True",
            "extra": "JSON object of the configured extra headers",
        },
    }
    tables["requests"] = {
        "description": "The table of asgi-log-to-sqlite 0.1.1, as a read-only view with its twelve columns and "
                       "their meaning, so existing queries keep working.",
        "columns": {
            "start": "epoch seconds, as a float",
            "method": "the method, as text",
            "path": "paths.id, as in 0.1.1",
            "query_string": "query_strings.id, as in 0.1.1",
            "user_agent": "user_agents.id, as in 0.1.1",
            "referer": "referers.id, as in 0.1.1",
            "accept_language": "accept_languages.id, as in 0.1.1",
            "http_status": "as sent",
            "content_type": "content_types.id, as in 0.1.1",
            "client_ip": "the address, as text, reduced by client_ip",
            "duration": "seconds, as a float",
            "body_size": "bytes",
        },
    }
    tables["requests_0_1"] = {
        "description": "The rows of a 0.1.1 file, kept whole when it was upgraded; the requests view reads them.",
        "columns": {name: f"{meaning}, as written by 0.1.1" for name, meaning in tables["requests"]["columns"].items()},
    }
    tables["log_counters"] = {
        "description": "What was not written, and what was left out on purpose, per reason.",
        "columns": {
            "reason": "queue_full, locked, disk_full, excluded, ... (docs/logger.md)",
            "count": "rows or requests",
            "first_ms": "first time counted, milliseconds since the epoch",
            "last_ms": "last time counted, milliseconds since the epoch",
            "last_error": "the last error message, for write failures",
        },
    }
    tables["log_meta"] = {
        "description": "Facts about the file, one per key: its file_id, and what retention has done.",
        "columns": {"key": "file_id, retention.pruned_rows, retention.lookup_generation, retention.last_prune, "
                           "rollups_to and toplists_to (the highest request_log.id the rollups and the top lists "
                           "count)",
                    "value": "the fact, as text"},
    }
    for period, unit in (("hourly", "hour"), ("daily", "day")):
        tables[f"rollup_{period}"] = {
            "description": f"Requests aggregated per {unit}, key and latency bucket, up to log_meta's rollups_to "
                           "(the writer adds its sums every 2 s or so); kept when pruning deletes the raw rows.",
            "columns": {unit: f"{unit}s since the Unix epoch, UTC", **_ROLLUP_KEY},
        }
        tables[f"rollup_{period}_readable"] = {
            "description": f"rollup_{period} with every id joined in and the {unit} readable.",
            "columns": {unit: "2026-12-01T14:00Z" if unit == "hour" else "2026-12-01", **_ROLLUP_READABLE},
        }
        tables[f"rollup_traffic_{period}"] = {
            "description": f"The whole site's requests per {unit}, status class, bot flag and latency bucket: "
                           f"rollup_{period} summed over routes, paths and methods, for charts over time.",
            "columns": {unit: f"{unit}s since the Unix epoch, UTC",
                        **{column: text for column, text in _ROLLUP_KEY.items()
                           if column not in ("route_id", "path_id", "method_id")}},
        }
        tables[f"rollup_visitors_{period}"] = {
            "description": f"Distinct visitors per {unit}, exactly: one row per {unit} and visitor; count(*) "
                           "counts them.",
            "columns": {unit: f"{unit}s since the Unix epoch", **_VISITORS},
        }
        for name, column, lookup, values in toplists.LISTS:
            tables[f"rollup_{name}_{period}"] = {
                "description": f"Requests per {unit} and {column[:-3].replace('_', ' ')}, for the top lists; summed "
                               "behind the writer up to log_meta's toplists_to (readers add the raw rows above it), "
                               "and kept when pruning deletes the raw rows.",
                "columns": {unit: f"{unit}s since the Unix epoch, UTC", column: f"{lookup}.id; 0 when the request had none",
                            **{value: _TOPLIST_VALUES[value] for value in values}},
            }
    tables["rollup_routes_daily"] = {
        "description": "rollup_daily summed per day and route (or path), for the lists of routes; kept with it, "
                       "in the same transactions.",
        "columns": {"day": "days since the Unix epoch, UTC", "route_id": _ROLLUP_KEY["route_id"],
                    "path_id": _ROLLUP_KEY["path_id"], "hits": "requests", "bots": "requests from bots",
                    "client_errors": "4xx responses", "server_errors": "5xx responses", "bytes": _ROLLUP_KEY["bytes"],
                    "duration_us_sum": _ROLLUP_KEY["duration_us_sum"],
                    "timed": "requests with a duration (imported rows have none)",
                    "duration_us_max": _ROLLUP_KEY["duration_us_max"]},
    }
    tables["rollup_route_latency_daily"] = {
        "description": "rollup_daily's timed requests summed per day, route (or path) and latency bucket, "
                       "for the percentiles of each route.",
        "columns": {"day": "days since the Unix epoch, UTC", "route_id": _ROLLUP_KEY["route_id"],
                    "path_id": _ROLLUP_KEY["path_id"], "bucket": _ROLLUP_KEY["bucket"], "hits": "requests",
                    "duration_us_max": _ROLLUP_KEY["duration_us_max"]},
    }
    tables["rollup_toplists_slice"] = {
        "description": "The writer's scratch table for the top lists: one slice of rows aggregated once, then added "
                       "to them; empty between slices.",
        "columns": {"list": "0 paths, 1 referers, 2 agents", "hour": "hours since the Unix epoch, UTC",
                    "id": "the list's lookup id", **_TOPLIST_VALUES},
    }
    tables["rollup_batch"] = {
        "description": "The writer's scratch table: one batch aggregated once, then added to the rollups; "
                       "empty between batches.",
        "columns": {"hour": "hours since the Unix epoch, UTC", **_ROLLUP_KEY},
    }
    tables["rollup_salts"] = {
        "description": "The salt of each day still open, deleted when the day is over.",
        "columns": {"day": "days since the Unix epoch", "salt": "16 random bytes"},
    }
    tables["import_sources"] = {
        "description": "Each access log imported into the file, with how far it was imported (docs/import.md).",
        "columns": {
            "id": "the source's id",
            "first_line": "sha256 of its first line: how a log is found again, whatever its name",
            "name": "the path it was last imported from (- for standard input)",
            "lines": "how many of its lines are imported",
            "bytes": "how many of its bytes (decompressed) are imported",
            "sha256": "of those bytes",
            "checkpoints": "JSON: the sha256 of its first 1, 2, 4, 8, ... lines",
            "rows": "lines imported, in all",
            "unparsed": "lines not parsed, in all",
            "first_ms": "when it was first imported, milliseconds since the epoch",
            "last_ms": "when it was last imported, milliseconds since the epoch",
        },
    }
    tables["log_merged_sources"] = {
        "description": "Each file merged into this one, by its file_id, with how far it was copied (docs/files.md).",
        "columns": {
            "file_id": "the source's log_meta.file_id",
            "first_ms": "start of the window of start times taken from it, epoch ms (inclusive)",
            "last_ms": "end of that window, epoch ms (exclusive)",
            "via": "NULL when merged directly; else the file_id of the file its rows came through",
            "path": "where the source was, last time",
            "last_row_id": "the highest request_log.id of the source copied so far",
            "rolled_up_to": "source ids up to this one were counted in the rollups its first merge added",
            "listed_to": "source ids up to this one were counted in the top lists its first merge added",
            "legacy_rowid": "the highest requests_0_1 rowid copied so far",
            "rows": "raw rows copied from it, in all",
            "counters": "JSON: each log_counters reason's count already added",
            "merged_at": "when it was last merged, UTC",
        },
    }
    return tables


DESCRIBED: Mapping[str, dict] = _described()

# Facets a user reaches for first, per table or view; each is kept only where the column exists,
# so an older or newer file never gets a facet Datasette would reject. The bot flag lives in
# user_agents, readable_requests (joined from there) and the rollups; request_log has no column for it.
FACETS: Mapping[str, List[str]] = {
    "readable_requests": ["http_status", "method", "content_type", "route", "is_bot"],
    "request_log": ["http_status", "method_id", "content_type_id", "route_id"],
    "user_agents": ["is_bot", "device", "browser", "os"],
    "rollup_hourly_readable": ["status", "method", "route", "is_bot"],
    "rollup_daily_readable": ["status", "method", "route", "is_bot"],
}

# Newest first, where rows are in time order by id.
SORT_DESC: Mapping[str, str] = {"readable_requests": "id", "request_log": "id"}

# Both lines list a database's tables visible first, then hidden ones, each by name, and neither
# can reorder them: hiding is how the lookups and the writer's scratch tables come after the
# tables people read. Views are listed apart, after the tables.
HIDDEN = tuple(LOOKUPS) + ("rollup_batch", "rollup_salts", "rollup_toplists_slice")

READABLE_VIEW = "readable_requests"


def table_config(table: str, columns: Iterable[str]) -> dict:
    """Datasette's table options for ``table`` (label, facets, sort, hidden), given its columns."""
    columns = set(columns)
    options: dict = {}
    if table in LOOKUPS:
        options["label_column"] = "name"
    if table in HIDDEN:
        options["hidden"] = True
    facets = [column for column in FACETS.get(table, ()) if column in columns]
    if facets:
        options["facets"] = facets
    if SORT_DESC.get(table) in columns:
        options["sort_desc"] = SORT_DESC[table]
    return options


def table_description(table: str) -> Optional[str]:
    """The description of a table or view of a log, or None for one this plugin does not know."""
    return DESCRIBED.get(table, {}).get("description")


def column_descriptions(table: str, columns: Iterable[str]) -> Dict[str, str]:
    """The description of each of ``columns`` of ``table`` that this plugin knows."""
    known = DESCRIBED.get(table, {}).get("columns", {})
    return {column: known[column] for column in columns if column in known}


def database_description_html(readable_url: str, database_url: str) -> str:
    """The log database's description: where to start, and where the lookup tables went."""
    return (
        f'A log of HTTP requests. Start with <a href="{escape(readable_url)}">{READABLE_VIEW}</a>: every '
        f"request with its path, status, agent and times readable. The lookup tables request_log refers to "
        f'are listed after the others, under <a href="{escape(database_url)}?_show_hidden=1">hidden tables</a>.'
    )
