"""What one request becomes: the raw record the event loop hands over, and the row the writer stores.

The event loop only gathers references and numbers into a tuple (``Record``); decoding, redaction,
truncation and address reduction happen here, on the writer thread.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .privacy import NEVER_STORED_HEADERS, AddressPolicy, QueryRedactor, TrustedProxies

# Bits of request_log.flags.
FLAG_TRUNCATED = 1        # at least one stored value was cut to max_value_length
FLAG_REPLACED = 2         # at least one value was not valid UTF-8; bad bytes stored as \xNN escapes
FLAG_EXCEPTION = 4        # the app raised (status 500 if before the response started)
FLAG_DISCONNECTED = 8     # the client went away before the response completed (status 499)
FLAG_WEBSOCKET = 16       # a websocket session (status 101 accepted, 403 refused)
FLAG_EXCLUDED_FAILURE = 32  # path was excluded, but logged because the status was >= 500
FLAG_NO_RESPONSE = 64     # the app returned without sending a response


class Record(NamedTuple):
    """The fields of the plain tuple the event loop hands to the writer: references and numbers only.

    The loop builds a bare tuple (cheaper than this class); ``Record._make`` names its fields here.
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
    ws_in: Optional[int] = None
    ws_out: Optional[int] = None
    ws_close: Optional[int] = None


# Lookup table of each text value in a Row, in Row order after the plain numbers.
class Row(NamedTuple):
    start_ms: int
    duration_us: int
    ttfb_us: Optional[int]
    method: Optional[str]
    path: Optional[str]
    query_string: Optional[str]
    user_agent: Optional[str]
    referer: Optional[str]
    accept_language: Optional[str]
    http_status: Optional[int]
    content_type: Optional[str]
    client_ip: Optional[str]
    forwarded_ip: Optional[str]
    host: Optional[str]
    route: Optional[str]
    body_size: int
    request_size: int
    flags: int
    sample_rate: float
    ws_messages_in: Optional[int]
    ws_messages_out: Optional[int]
    ws_close_code: Optional[int]
    request_id: Optional[str]
    extra: Optional[str]


# Row field -> lookup table, for the fields stored as ids.
LOOKUP_FIELDS = {
    "method": "methods",
    "path": "paths",
    "query_string": "query_strings",
    "user_agent": "user_agents",
    "referer": "referers",
    "accept_language": "accept_languages",
    "content_type": "content_types",
    "client_ip": "client_ips",
    "forwarded_ip": "client_ips",
    "host": "hosts",
    "route": "routes",
}
LOOKUP_POSITIONS = tuple((Row._fields.index(name), table) for name, table in LOOKUP_FIELDS.items())


class Shaper:
    """The per-middleware options that decide what a record becomes. Used on the writer thread."""

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

    def row(self, record: Record, wall_offset: float) -> Row:
        """The row to store; ``wall_offset`` is time.time() - time.perf_counter() now."""
        scope = record.scope
        flags = record.flags
        status = record.status
        if flags & FLAG_DISCONNECTED:
            status = 499  # as nginx logs a client that closed the connection first
        elif status is None:
            if flags & FLAG_EXCEPTION:
                status = 500
            else:
                flags |= FLAG_NO_RESPONSE
        body_size = 0 if scope.get("method") == "HEAD" else record.body_size
        method = scope.get("method") if not flags & FLAG_WEBSOCKET else "WEBSOCKET"
        user_agent = referer = accept_language = host = x_request_id = forwarded = x_forwarded_for = None
        extra: Dict[str, str] = {}
        for name, value in scope.get("headers") or ():
            # Header names are lower-cased bytes by the ASGI spec; be lenient with str.
            if isinstance(name, str):
                name = name.encode("latin-1", "replace")
            name = bytes(name).lower()
            if name == b"user-agent":
                user_agent = user_agent or value
            elif name == b"referer":
                referer = referer or value
            elif name == b"accept-language":
                accept_language = accept_language or value
            elif name == b"host":
                host = host or value
            elif name == b"x-request-id":
                x_request_id = x_request_id or value
            elif name == b"forwarded":
                forwarded = value if forwarded is None else forwarded + b"," + value
            elif name == b"x-forwarded-for":
                x_forwarded_for = value if x_forwarded_for is None else x_forwarded_for + b"," + value
            if name in self.extra_request:
                text, flags = self._text(value, flags)
                key = "request." + name.decode("latin-1")
                extra[key] = text if key not in extra else extra[key] + ", " + text
        content_type = None
        for name, value in record.response_headers or ():
            name = bytes(name).lower()
            if name == b"content-type":
                content_type = value
            if name in self.extra_response:
                text, flags = self._text(value, flags)
                extra["response." + name.decode("latin-1")] = text

        path, flags = self._text(scope.get("path"), flags)
        # Stored with its leading "?", as 0.1.1 did, so old and new rows share query_strings.
        query, flags = self._text(scope.get("query_string") or None, flags, self.redactor.redact_query)
        user_agent, flags = self._text(user_agent, flags)
        referer, flags = self._text(referer, flags, self.redactor.redact_url)
        accept_language, flags = self._text(accept_language, flags)
        content_type, flags = self._text(content_type, flags)
        host, flags = self._text(host, flags)
        method, flags = self._text(method, flags)

        client = scope.get("client")
        peer = client[0] if client else None
        if not isinstance(peer, str):
            peer = None
        forwarded_ip = None
        if self.proxies:
            forwarded_ip = self.proxies.resolve(
                peer,
                _latin1(forwarded) if forwarded is not None else None,
                _latin1(x_forwarded_for) if x_forwarded_for is not None else None,
            )
        route = _route_of(scope)
        if route is not None:
            route, flags = self._text(route, flags)

        request_id = None
        if self.request_id:
            request_id, flags = self._text(x_request_id, flags) if x_request_id else (uuid.uuid4().hex, flags)

        t0, ttfb = record.t0, record.ttfb
        return Row(
            start_ms=int((t0 + wall_offset) * 1000),
            duration_us=int((record.end - t0) * 1_000_000),
            ttfb_us=int((ttfb - t0) * 1_000_000) if ttfb is not None else None,
            method=method,
            path=path,
            query_string=query,
            user_agent=user_agent,
            referer=referer,
            accept_language=accept_language,
            http_status=status,
            content_type=content_type,
            client_ip=self.addresses.reduce(peer),
            forwarded_ip=self.addresses.reduce(forwarded_ip),
            host=host,
            route=route,
            body_size=body_size,
            request_size=record.request_size,
            flags=flags,
            sample_rate=self.sample_rate,
            ws_messages_in=record.ws_in,
            ws_messages_out=record.ws_out,
            ws_close_code=record.ws_close,
            request_id=request_id,
            extra=json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None,
        )

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


def _only_escapes(text: str) -> bool:
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def _latin1(value: bytes) -> str:
    return bytes(value).decode("latin-1")


def _route_of(scope: Dict[str, Any]) -> Optional[str]:
    """The route template, where the framework puts one in the scope (Starlette, FastAPI)."""
    route = scope.get("route")
    if route is None:
        return None
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
