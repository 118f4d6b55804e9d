"""What one request becomes: the raw record the event loop hands over, and the row the writer stores.

The event loop only gathers references and numbers into a ``Record``; decoding, redaction,
truncation and address reduction happen here, on the writer thread. The values of a row follow
schema.COMMON_COLUMNS (and OPTIONAL_COLUMNS), which this module checks when it is imported.
"""
from __future__ import annotations

import json
import math
import sqlite3
import uuid
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from .privacy import NEVER_STORED_HEADERS, AddressPolicy, QueryRedactor, TrustedProxies
from .rollups import BUCKET_OF as _BUCKET_OF, BUCKETED_US as _BUCKETED_US, BUCKETS_PER_OCTAVE
from .schema import COMMON_COLUMNS, NULL_SENTINEL, OPTIONAL_COLUMNS

# Bits of request_log.flags.
FLAG_TRUNCATED = 1        # at least one stored value was cut to max_value_length
FLAG_REPLACED = 2         # at least one value was not valid UTF-8; bad bytes stored as \xNN escapes
FLAG_EXCEPTION = 4        # the app raised (status 500 if before the response started)
FLAG_DISCONNECTED = 8     # the client went away before the response completed (status 499)
FLAG_WEBSOCKET = 16       # a websocket session (status 101 accepted, 403 refused)
FLAG_EXCLUDED_FAILURE = 32  # path was excluded, but logged because the status was >= 500
FLAG_NO_RESPONSE = 64     # the app returned without sending a response
FLAG_BUCKETED = 128       # a value past max_distinct_values was stored as "(other)"
FLAG_IMPORTED = 256       # imported from an access log file (importer.py), not logged live


class Record(NamedTuple):
    """One request or websocket session as the event loop hands it to the writer: references and
    numbers only. Its kind is told by ``flags`` (FLAG_WEBSOCKET), never by its length; the writer
    also takes a plain tuple of the first ten fields, for an HTTP request (tests and tools build those).

    The loop builds it with ``tuple.__new__(Record, fields)``, all thirteen in order, which costs a
    third of ``Record(...)``'s Python-level call (benchmarks/logger_inprocess.py gives the loop's cost).
    Times are ``time.perf_counter()`` readings; the writer turns them into wall-clock times.
    """

    shaper: "Shaper"
    scope: Dict[str, Any]
    t0: float                    # perf_counter at the start
    end: float                   # perf_counter when the app returned (or raised)
    ttfb: Optional[float]        # perf_counter at the response start, or None
    status: Optional[int]        # as the app sent it, or None
    response_headers: Any        # the list the app sent, or None
    body_size: int
    request_size: int
    flags: int                   # FLAG_EXCEPTION, FLAG_DISCONNECTED, FLAG_WEBSOCKET, FLAG_EXCLUDED_FAILURE
    ws_in: Optional[int] = None  # websocket sessions only: messages received, sent, and the close code
    ws_out: Optional[int] = None
    ws_close: Optional[int] = None


# Request headers the row reads, by their ASGI (lower-case bytes) name -> slot in a small list.
_UA, _REFERER, _LANGUAGE, _HOST, _REQUEST_ID, _FORWARDED, _XFF = range(7)
_WANTED = {
    b"user-agent": _UA, b"referer": _REFERER, b"accept-language": _LANGUAGE, b"host": _HOST,
    b"x-request-id": _REQUEST_ID, b"forwarded": _FORWARDED, b"x-forwarded-for": _XFF,
}
# Headers that may legitimately repeat and are then joined (RFC 9110 list syntax).
_JOINED = (_FORWARDED, _XFF)

# How a raw value becomes text.
_PLAIN, _QUERY, _URL, _ADDRESS = range(4)
# Lookup kinds, each with its own raw-value cache: (table, how its raw value becomes text, column).
# Their order is the order of the ids in a row (schema.COMMON_COLUMNS after _NUMBERS).
_KINDS = (
    ("methods", _PLAIN, "method_id"), ("paths", _PLAIN, "path_id"), ("query_strings", _QUERY, "query_string_id"),
    ("user_agents", _PLAIN, "user_agent_id"), ("referers", _URL, "referer_id"),
    ("accept_languages", _PLAIN, "accept_language_id"), ("content_types", _PLAIN, "content_type_id"),
    ("client_ips", _ADDRESS, "client_ip_id"), ("hosts", _PLAIN, "host_id"), ("routes", _PLAIN, "route_id"),
)
_METHOD, _PATH, _QUERY_STRING, _AGENT, _REFERER_URL, _LANG, _TYPE, _IP, _HOSTNAME, _ROUTE = range(len(_KINDS))
# The columns before the ids, in the order Shaper.rows_into writes their values, and the columns
# of its tail (websockets and options). Checked here so that the schema stays the order's one home.
_NUMBERS = ("start_ms", "duration_us", "ttfb_us", "http_status", "body_size", "request_size", "flags")
_TAIL = ("sample_rate", "forwarded_ip_id", "ws_messages_in", "ws_messages_out", "ws_close_code", "request_id", "extra")
if _NUMBERS + tuple(kind[2] for kind in _KINDS) != COMMON_COLUMNS or _TAIL != OPTIONAL_COLUMNS:
    raise ImportError("record.py builds rows in an order that is not schema.COMMON_COLUMNS + OPTIONAL_COLUMNS")
_log2 = math.log2
_NOTHING = (0, 0)  # the (id, flags) of a missing value: stored as NULL
_UNKNOWN = object()  # a record's _combination, not computed yet

# A raw value -> (id, flags) cache per kind holds at most this many entries before starting over.
_CACHE_LIMIT = 5_000
# Combinations of raw values (see _combination) -> their ids, kept before starting over. Real
# traffic repeats a few thousand combinations; one dict lookup then replaces ten.
_COMBINED_LIMIT = 4_096

IdOf = Callable[[str, str], Tuple[int, int]]   # (table, text) -> (id, flags), inside the writer's transaction


class Shaper:
    """The per-middleware options that decide what a record becomes. Used on the writer thread.

    Repeated raw values (the same path, agent, query string...) are looked up in a cache keyed by
    the raw value, so decoding, redaction and truncation run once per distinct value, not per row.
    """

    def __init__(
        self,
        *,
        max_value_length: int = 1000,
        request_headers: Sequence[str] = (),
        response_headers: Sequence[str] = (),
        request_id: bool = False,
        client_ip: str = "truncate",
        trusted_proxies: Sequence[str] = (),
        redact_params: Sequence[str] = (),
        sample_rate: float = 1.0,
    ):
        if not isinstance(max_value_length, int) or max_value_length < 16:
            raise ValueError(f"max_value_length={max_value_length!r}: expected an integer of at least 16")
        self.max_value_length = max_value_length
        self.extra_request = _header_names(request_headers, "request_headers")
        self.extra_response = _header_names(response_headers, "response_headers")
        self.request_id = bool(request_id)
        self.addresses = AddressPolicy(client_ip)
        self.proxies = TrustedProxies(trusted_proxies)
        self.redactor = QueryRedactor(redact_params)
        self.sample_rate = float(sample_rate)
        # A sampled middleware's plain rows bind every column, its rate among them (_TAIL's order);
        # the others leave sample_rate to its DEFAULT 1.0.
        self._sampled = (None if self.sample_rate == 1.0 else
                         (self.sample_rate, *(NULL_SENTINEL[column] for column in OPTIONAL_COLUMNS[1:])))
        # Whether any per-row option beyond the defaults is on: one test on the common path.
        self._optional = bool(self.proxies or self.request_id or self.extra_request or self.extra_response)
        # Per lookup kind: raw value -> (id, flags). Valid for one database file (one writer).
        self._caches: List[Dict[Any, Tuple[int, int]]] = [{None: _NOTHING} for _ in _KINDS]
        # (method, path, query, agent, referer, language, host, content type, peer, route) -> the
        # ids and flags _lookups found for them.
        self._combined: Dict[tuple, tuple] = {}

    def forget(self) -> None:
        """Drop cached ids, after a rolled-back transaction may have made some of them invalid."""
        for cache in self._caches:
            cache.clear()
            cache[None] = _NOTHING
        self._combined.clear()

    def rows_into(self, records: Iterable[tuple], wall_offset: float, id_of: IdOf,
                  plain: list, full: list, failed: Callable[[Exception], None], tally: Any = None) -> int:
        """Shape ``records`` (all queued by this shaper's middleware) onto the end of ``plain``
        (rows of schema.COMMON_COLUMNS) or ``full`` (rows of schema.COLUMNS), flattened as the
        multi-row INSERTs bind them. Returns how many rows were added; a record that cannot be
        shaped goes to ``failed`` (SQLite errors propagate: the transaction must roll back).

        ``wall_offset`` is time.time() - time.perf_counter() now; ``id_of`` inserts or finds a
        lookup value; ``tally`` (a rollups.RollupTally), when given, sums each row into its rollup
        group. Missing values are schema.NULL_SENTINEL's 0 or -1, never None (see there why);
        times are floats that the INSERT truncates (schema.TRUNCATED).

        Nearly every record is a plain HTTP request whose combination of values was seen
        before: one key and one dict lookup give its ids. The others go through _prepared. The
        writer spends most of its time in this loop, and this is the one place a row is laid out.
        """
        combined = self._combined
        combination = combined.get
        sampled = self._sampled  # the tail of a plain row: None, unless this middleware samples
        simple = not self._optional
        if tally is not None:
            index, hits, sizes, sums, longest = tally.index, tally.hits, tally.sizes, tally.sums, tally.longest
            visits = tally.visits
            group_at = index.get  # bound once, not looked up per row
        else:
            index = None
        # The hour of the rows being tallied, and its bounds in ms: consecutive rows share it.
        hour, hour_from, hour_to = 0, 0.0, 0.0
        added = 0
        for record in records:
            try:
                # A slice, so that a plain tuple of Record's first ten fields (tests, tools) is read alike.
                _, scope, t0, end, ttfb, status, response_headers, body_size, request_size, flags = record[:10]
                looked = None
                key = _UNKNOWN
                # flags 0: no exception, disconnect or websocket; HEAD and no response need _prepared.
                if simple and not flags:
                    method = scope.get("method")
                    if status is not None and method != "HEAD":
                        client = scope.get("client")
                        content_type = None
                        for name, value in response_headers or ():  # _content_type, without its call
                            if name == b"content-type":
                                content_type = value
                                break
                        headers = scope.get("headers") or ()
                        try:
                            # _combination, inline (a property test holds the two equal): its call per row
                            # cost about 700 instructions, a twentieth of this loop.
                            named = dict(headers) if type(headers) is list or type(headers) is tuple else ()
                            if len(named) == len(headers):
                                route = scope.get("route")
                                key = (method, scope.get("path"), scope.get("query_string") or None,
                                       named.get(b"user-agent"), named.get(b"referer"),
                                       named.get(b"accept-language"), named.get(b"host"), content_type,
                                       client[0] if client else None, None if route is None else _route_path(route))
                                looked = combination(key)
                            else:
                                key = None
                        except (TypeError, ValueError):  # unhashable values: _prepared normalises them
                            key, looked = _UNKNOWN, None
                if looked is None:
                    status, body_size, ids, flags, tail = self._prepared(record, id_of, key)
                    part = tally.part_of(ids) if tally is not None else None
                else:
                    ids, flags, part, _ = looked
                    tail = sampled
                    if part is None and tally is not None:
                        part = looked[2] = tally.part_of(ids)
                start_ms = (t0 + wall_offset) * 1000
                duration = (end - t0) * 1_000_000
                # schema.COMMON_COLUMNS (see _NUMBERS and _KINDS): these, then the ids. Both are
                # added after everything that can raise, so a row is never added in part.
                numbers = (
                    start_ms, duration, (ttfb - t0) * 1_000_000 if ttfb is not None else -1,
                    status, body_size, request_size, flags,
                )
                if index is not None:
                    # The row's rollup group, as rollups._FILL_BATCH keys it: the INSERT truncates
                    # the times as int() does, and SQLite's log2() of d + 1 <= 0 is NULL.
                    us = int(duration)
                    if not hour_from <= start_ms < hour_to:
                        hour = int(start_ms // 3_600_000)
                        hour_from = hour * 3_600_000.0
                        hour_to = hour_from + 3_600_000.0
                    # Its visitor (hour, address id, agent id), once an hour per cached combination:
                    # the forwarded address where a trusted proxy gave one, as rollups._VISITS reads it.
                    if looked is None:
                        visits.add((hour, tail[1] or ids[7] if tail else ids[7], ids[3]))
                    elif looked[3] != hour:
                        looked[3] = hour
                        visits.add((hour, ids[7], ids[3]))
                    group_key = (part, hour, status // 100,
                                 _BUCKET_OF[us] if 0 <= us < _BUCKETED_US else
                                 int(BUCKETS_PER_OCTAVE * _log2(us + 1)) if us >= 0 else None)
                    at = group_at(group_key)
                    if at is None:
                        size = body_size + 0  # first: the one sum a bad record can make raise
                        index[group_key] = len(hits)
                        hits.append(1)
                        sizes.append(size)
                        sums.append(us)
                        longest.append(us)
                    else:
                        sizes[at] += body_size  # first, as above
                        hits[at] += 1
                        sums[at] += us
                        if us > longest[at]:
                            longest[at] = us
                if tail is None:
                    plain += numbers
                    plain += ids
                else:
                    full += numbers + ids + tail  # schema.OPTIONAL_COLUMNS (_TAIL)
                added += 1
            except sqlite3.Error:
                raise
            except Exception as error:
                failed(error)
        return added

    def row(self, record: tuple, wall_offset: float, id_of: IdOf) -> tuple:
        """The values of one request_log row, lookup ids resolved: schema.COMMON_COLUMNS for a plain
        HTTP request, schema.COLUMNS when a websocket, an option or sampling fills the others."""
        plain: list = []
        full: list = []
        errors: List[Exception] = []
        self.rows_into([record], wall_offset, id_of, plain, full, errors.append)
        if errors:
            raise errors[0]
        return tuple(plain or full)

    def _prepared(self, record: tuple, id_of: IdOf, key: Any) -> tuple:
        """(status, body_size, ids, flags, tail) of a record the fast path could not take: the
        status and size as stored, the lookup ids, the row's flags, and its OPTIONAL_COLUMNS
        values (None for a plain HTTP row of a middleware that does not sample).

        ``key`` is the record's _combination when rows_into looked it up and did not find it.
        """
        _, scope, t0, end, ttfb, status, response_headers, body_size, request_size, flags = record[:10]
        if flags & FLAG_DISCONNECTED:
            status = 499  # as nginx logs a client that closed the connection first
        elif status is None:
            if flags & FLAG_EXCEPTION:
                status = 500
            else:
                flags |= FLAG_NO_RESPONSE
        method = scope.get("method")
        if method == "HEAD":
            body_size = 0  # servers send no body for HEAD, whatever the app produced
        websocket = flags & FLAG_WEBSOCKET
        if websocket:
            method = "WEBSOCKET"

        content_type = _content_type(response_headers)
        client = scope.get("client")
        peer = client[0] if client else None
        found = None  # the request headers the row reads, by slot; gathered only when needed
        try:
            # The common case costs one dict lookup: the ids of this combination of raw values.
            if key is _UNKNOWN:
                key = _combination(scope, method, content_type, peer)
                looked = self._combined.get(key) if key is not None else None
            else:
                looked = None  # rows_into looked it up: a combination not seen yet
            if looked is None:
                found = _wanted_headers(scope.get("headers"))
                looked = self._lookups(scope, method, content_type, peer, found, id_of)
                if key is not None:
                    if len(self._combined) >= _COMBINED_LIMIT:
                        self._combined.clear()
                    # [ids, flags, rollup part, hour of the visit last tallied]: rows_into fills the
                    # last two when a tally asks.
                    self._combined[key] = [*looked, None, None]
        except TypeError:
            # An unhashable value (a bytearray header, a list as client address): normalise, retry.
            return self._prepared(_normalised(record), id_of, _UNKNOWN)
        ids, lookup_flags = looked[0], looked[1]
        flags |= lookup_flags
        if not websocket and not self._optional:
            return status or 0, body_size, ids, flags, self._sampled
        forwarded_id = request_id = extra = 0
        if self._optional:
            forwarded_id, request_id, extra, flags = self._options(scope, peer, found, response_headers, flags, id_of)
        ws_in = ws_out = ws_close = -1
        if websocket:
            ws_in, ws_out, ws_close = (-1 if v is None else v for v in record[10:13])
        return status or 0, body_size, ids, flags, (self.sample_rate, forwarded_id, ws_in, ws_out, ws_close, request_id, extra)

    def _options(self, scope, peer, found, response_headers, flags: int, id_of: IdOf) -> tuple:
        """(forwarded_ip_id, request_id, extra, flags): the columns only options fill (0 when empty)."""
        if found is None:
            found = _wanted_headers(scope.get("headers"))
        forwarded_id = request_id = extra = 0
        if self.proxies:
            resolved = self.proxies.resolve(
                peer if isinstance(peer, str) else None,
                _latin1(found[_FORWARDED]) if found[_FORWARDED] is not None else None,
                _latin1(found[_XFF]) if found[_XFF] is not None else None,
            )
            forwarded_id = (self._caches[_IP].get(resolved) or self._miss(_IP, resolved, id_of))[0]
        if self.request_id:
            if found[_REQUEST_ID] is not None:
                request_id, flags = self._text(found[_REQUEST_ID], flags)
            else:
                request_id = uuid.uuid4().hex
        if self.extra_request or self.extra_response:
            extra, flags = self._extra(scope, response_headers, flags)
        return forwarded_id, request_id, extra, flags

    def _lookups(self, scope, method, content_type, peer, found: List[Any], id_of: IdOf) -> tuple:
        """(ids, flags): a row's lookup ids in schema.COMMON_COLUMNS order, and the flags they carry.

        Each id comes from its own per-kind cache, or from _miss.
        """
        miss = self._miss
        c_method, c_path, c_query, c_agent, c_referer, c_lang, c_type, c_ip, c_host, c_route = self._caches
        path, query = scope.get("path"), scope.get("query_string") or None
        agent, referer, language, host = found[0], found[1], found[2], found[3]  # _UA .. _HOST
        m = c_method.get(method) or miss(_METHOD, method, id_of)
        p = c_path.get(path) or miss(_PATH, path, id_of)
        q = c_query.get(query) or miss(_QUERY_STRING, query, id_of)
        a = c_agent.get(agent) or miss(_AGENT, agent, id_of)
        r = c_referer.get(referer) or miss(_REFERER_URL, referer, id_of)
        lang = c_lang.get(language) or miss(_LANG, language, id_of)
        ct = c_type.get(content_type) or miss(_TYPE, content_type, id_of)
        ip = c_ip.get(peer) or miss(_IP, peer, id_of)
        h = c_host.get(host) or miss(_HOSTNAME, host, id_of)
        route = scope.get("route")
        rt = _NOTHING
        if route is not None:
            template = _route_path(route)
            rt = c_route.get(template) or miss(_ROUTE, template, id_of)
        flags = m[1] | p[1] | q[1] | a[1] | r[1] | lang[1] | ct[1] | ip[1] | h[1] | rt[1]
        return (m[0], p[0], q[0], a[0], r[0], lang[0], ct[0], ip[0], h[0], rt[0]), flags

    def _miss(self, kind: int, raw: Any, id_of: IdOf) -> Tuple[int, int]:
        """(id, flags) of a raw value not seen before: shape it, find or insert it, cache it."""
        table, shape, _ = _KINDS[kind]
        if shape == _ADDRESS:
            text, flags = self.addresses.reduce(raw if isinstance(raw, str) else None), 0
        else:
            redact = self.redactor.redact_query if shape == _QUERY else self.redactor.redact_url if shape == _URL else None
            text, flags = self._text(raw, 0, redact)
        if text is None:
            hit = (0, flags)
        else:
            found, extra_flags = id_of(table, text)
            hit = (found, flags | extra_flags)
        cache = self._caches[kind]
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
            cache[None] = _NOTHING
        cache[raw] = hit
        return hit

    def _extra(self, scope, response_headers, flags: int) -> Tuple[str, int]:
        extra: Dict[str, str] = {}
        for prefix, wanted, headers in (("request.", self.extra_request, scope.get("headers")),
                                        ("response.", self.extra_response, response_headers)):
            for name, value in headers or ():
                name = bytes(name).lower()
                if name in wanted:
                    text, flags = self._text(value, flags)
                    key = prefix + name.decode("latin-1")
                    extra[key] = text if key not in extra else extra[key] + ", " + text
        return json.dumps(extra, ensure_ascii=False, sort_keys=True), flags

    def _text(self, value: Any, flags: int, redact=None) -> Tuple[Optional[str], int]:
        """Decode to text that SQLite can store and that round-trips, or flag what was replaced."""
        if value is None:
            return None, flags
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("utf-8", "backslashreplace")
                flags |= FLAG_REPLACED
        elif isinstance(value, str):
            text = value
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # Lone surrogates (from surrogateescape-decoded paths) cannot go into SQLite as text.
                text = text.encode("utf-8", "surrogateescape" if _only_escapes(text) else "backslashreplace").decode(
                    "utf-8", "backslashreplace"
                )
                flags |= FLAG_REPLACED
        else:
            text = str(value)
        if redact is not None:
            text = redact(text)
        if len(text) > self.max_value_length:
            text = text[: self.max_value_length]
            flags |= FLAG_TRUNCATED
        return text, flags


def _wanted_headers(headers) -> List[Any]:
    """The raw values of the request headers a row reads, by slot (_UA, _REFERER, ...).

    The first value of a repeated header wins, except Forwarded and X-Forwarded-For, which are joined.
    """
    found: List[Any] = [None] * 7
    for name, value in headers or ():
        slot = _WANTED.get(name)
        if slot is None:
            continue
        if found[slot] is None:
            found[slot] = value
        elif slot in _JOINED:
            found[slot] = bytes(found[slot]) + b"," + bytes(value)
    return found


def _content_type(response_headers) -> Any:
    """The raw value of the first Content-Type response header, or None."""
    for name, value in response_headers or ():
        if name == b"content-type":
            return value
    return None


def _combination(scope: Dict[str, Any], method: Any, content_type: Any, peer: Any) -> Optional[tuple]:
    """The raw values that decide a row's lookup ids, as one hashable key; None when headers repeat.

    dict() reads the header list in C. With a header name repeated it would keep the last value
    where _wanted_headers keeps the first, so such requests take the slower way.
    """
    headers = scope.get("headers") or ()
    if type(headers) is not list and type(headers) is not tuple:
        return None  # an iterator would be used up here
    try:
        named = dict(headers)
    except (TypeError, ValueError):
        return None
    if len(named) != len(headers):
        return None
    route = scope.get("route")
    return (method, scope.get("path"), scope.get("query_string") or None, named.get(b"user-agent"),
            named.get(b"referer"), named.get(b"accept-language"), named.get(b"host"), content_type, peer,
            None if route is None else _route_path(route))


def _normalised(record: tuple) -> tuple:
    """The record with bytes-like header values as bytes and a client address as a string or None."""
    scope = dict(record[1])
    scope["headers"] = [(bytes(n), bytes(v)) for n, v in scope.get("headers") or ()]
    client = scope.get("client")
    if client and not isinstance(client[0], str):
        scope["client"] = None
    for key in ("path", "query_string"):
        if isinstance(scope.get(key), (bytearray, memoryview)):
            scope[key] = bytes(scope[key])
    return (record[0], scope) + tuple(record[2:])


def _only_escapes(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def _latin1(value: bytes) -> str:
    return bytes(value).decode("latin-1")


def _route_path(route: Any) -> Optional[str]:
    """The route template of scope["route"], as Starlette and FastAPI set it."""
    path = getattr(route, "path", None) or getattr(route, "path_format", None)
    return path if isinstance(path, str) else None


def _header_names(names: Sequence[str], option: str) -> frozenset:
    if isinstance(names, str):
        raise ValueError(f"{option}={names!r}: expected a list of header names, not one string")
    lowered = set()
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{option}: found {name!r}, expected header names as strings")
        if name.lower() in NEVER_STORED_HEADERS:
            raise ValueError(
                f"{option}: {name!r} is never stored (Authorization, Cookie, Set-Cookie and "
                "Proxy-Authorization carry credentials); remove it"
            )
        lowered.add(name.lower().encode("latin-1"))
    return frozenset(lowered)
