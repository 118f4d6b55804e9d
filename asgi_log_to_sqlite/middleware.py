"""The ASGI side: watch one request or websocket session, build a Record, hand it to the writer.

Nothing here touches SQLite or decodes text. The request path adds a few attribute updates per
message and, at the end, one tuple and one ``put_nowait``. Any error of ours is counted, never
raised into the server; the app's own exceptions propagate unchanged.
"""
from __future__ import annotations

import asyncio
import fnmatch
import os
import random
import re
from time import perf_counter
from typing import Optional, Sequence

from .retention import DEFAULT_MAX_DISTINCT_VALUES, Retention
from .rotation import DatedPath, is_dated
from .record import FLAG_DISCONNECTED, FLAG_EXCEPTION, FLAG_EXCLUDED_FAILURE, FLAG_WEBSOCKET, Record, Shaper
from .writer import Writer, writer_for

# A Record from its fields in order, in C: Record(...) is a Python-level call on every request.
_new = tuple.__new__


class _Exchange:
    """What one websocket session has done so far."""

    __slots__ = ("status", "headers", "body", "received", "ttfb", "disconnected", "complete", "ws_in", "ws_out", "ws_close")

    def __init__(self):
        self.status = None
        self.headers = None
        self.body = 0
        self.received = 0
        self.ttfb = None
        self.disconnected = False
        self.complete = False
        self.ws_in = 0
        self.ws_out = 0
        self.ws_close = None


class AsgiLogToSqlite:
    """Log every HTTP request and websocket session of ``app`` to the SQLite file ``file``.

    Construction is cheap and may happen many times: the writer thread and its connection are
    shared per file per process and start at the first request.
    """

    def __init__(
        self,
        app,
        file: str,
        *,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        log_excluded_failures: bool = True,
        sample_rate: float = 1.0,
        request_headers: Sequence[str] = (),
        response_headers: Sequence[str] = (),
        max_value_length: int = 1000,
        request_id: bool = False,
        client_ip: str = "truncate",
        trusted_proxies: Sequence[str] = (),
        redact_params: Sequence[str] = (),
        queue_size: int = 10_000,
        batch_size: int = 1_000,
        busy_timeout_ms: int = 5_000,
        stop_timeout_ms: int = 5_000,
        max_size_mb: Optional[float] = None,
        max_distinct_values: Optional[int] = DEFAULT_MAX_DISTINCT_VALUES,
        keep_days: Optional[float] = None,
        keep_rows: Optional[int] = None,
        keep_files: Optional[int] = None,
    ):
        self.app = app
        if not isinstance(file, (str, os.PathLike)):
            raise ValueError(f"file={file!r}: expected the path of the SQLite file to log to")
        self.file = os.fspath(file)
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ValueError(f"sample_rate={sample_rate!r}: expected a number in (0, 1], for example 0.1 for one request in ten")
        self.sample_rate = float(sample_rate)
        self.include = _patterns(include, "include")
        self.exclude = _patterns(exclude, "exclude")
        self.log_excluded_failures = bool(log_excluded_failures)
        self.shaper = Shaper(
            max_value_length=max_value_length,
            request_headers=request_headers,
            response_headers=response_headers,
            request_id=request_id,
            client_ip=client_ip,
            trusted_proxies=trusted_proxies,
            redact_params=redact_params,
            sample_rate=self.sample_rate,
        )
        for name, value in (("busy_timeout_ms", busy_timeout_ms), ("stop_timeout_ms", stop_timeout_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}: expected a whole number of milliseconds, for example 5000")
        Retention.validate(keep_days=keep_days, keep_rows=keep_rows, max_size_mb=max_size_mb)
        if is_dated(self.file):
            DatedPath(self.file)  # raises ValueError naming an unusable pattern
        if keep_files is not None:
            if isinstance(keep_files, bool) or not isinstance(keep_files, int) or keep_files < 1:
                raise ValueError(f"keep_files={keep_files!r}: expected a whole number of files of at least 1, for example 12")
            if not is_dated(self.file):
                raise ValueError(f"keep_files={keep_files!r} needs a dated file pattern, for example "
                                 f"file=\"logs/requests-%Y-%m.db\"; {self.file!r} names one file")
        if max_distinct_values is not None and not (isinstance(max_distinct_values, int) and max_distinct_values >= 1):
            raise ValueError(f"max_distinct_values={max_distinct_values!r}: expected a whole number of at least 1, "
                             "for example 100000")
        self.writer: Writer = writer_for(self.file, queue_size=queue_size, batch_size=batch_size,
                                         busy_timeout_ms=busy_timeout_ms, stop_timeout_ms=stop_timeout_ms,
                                         max_size_mb=max_size_mb, max_distinct_values=max_distinct_values,
                                         keep_days=keep_days, keep_rows=keep_rows, keep_files=keep_files)
        self.submit = self.writer.submit
        self.filtered = bool(self.include or self.exclude or self.sample_rate < 1.0)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self._not_http(scope, receive, send)
        # The request path, kept lean: closure cells, one perf_counter per event, and at the end
        # one plain tuple for the writer. Decoding and everything else happen on the writer thread.
        t0 = perf_counter()
        status = headers = ttfb = None
        body = received = 0
        complete = disconnected = False

        async def watch_receive():
            nonlocal received, disconnected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            elif not complete and message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def watch_send(message):
            nonlocal status, headers, ttfb, body, complete
            if message["type"] == "http.response.body":
                await send(message)  # counted once handed over: bytes sent, not bytes produced
                body += len(message.get("body", b""))
                if not message.get("more_body", False):
                    complete = True
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers")
                ttfb = perf_counter()
            await send(message)

        outcome = 0
        try:
            await self.app(scope, watch_receive, watch_send)
        except BaseException:
            outcome = FLAG_EXCEPTION
            raise
        finally:
            try:
                if disconnected:
                    outcome |= FLAG_DISCONNECTED
                record = _new(Record, (self.shaper, scope, t0, perf_counter(), ttfb, status, headers, body,
                                       received, outcome, None, None, None))
                if self.filtered:
                    self._submit_filtered(record)
                else:
                    self.submit(record)
            except Exception:
                # Never raise into the server; count what could not be logged.
                self.writer.loop_counts["internal_error"] += 1

    def _submit_filtered(self, record) -> None:
        """Include/exclude patterns and sampling, decided on the loop before anything is queued.

        The same for HTTP requests and websocket sessions, so that every row's sample_rate is true.
        """
        counts = self.writer.loop_counts
        scope, status, outcome = record.scope, record.status, record.flags
        if self.include or self.exclude:
            if not self._wanted(scope.get("path", "")):
                failed = status is None or status >= 500 or outcome & FLAG_EXCEPTION
                if not (self.log_excluded_failures and failed):
                    counts["excluded"] += 1
                    return
                record = record._replace(flags=outcome | FLAG_EXCLUDED_FAILURE)
        if self.sample_rate < 1.0 and random.random() >= self.sample_rate:
            counts["sampled_out"] += 1
            return
        self.submit(record)

    async def _not_http(self, scope, receive, send):
        kind = scope["type"]
        if kind == "websocket":
            return await self._websocket(scope, receive, send)
        if kind == "lifespan":
            return await self._lifespan(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _websocket(self, scope, receive, send):
        t0 = perf_counter()
        ex = _Exchange()

        async def watch_receive():
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                ex.ws_in += 1
                ex.received += len(message.get("bytes") or b"") + len((message.get("text") or "").encode("utf-8", "replace"))
            elif kind == "websocket.disconnect":
                ex.ws_close = message.get("code", 1005)
            return message

        async def watch_send(message):
            kind = message["type"]
            if kind == "websocket.send":
                ex.ws_out += 1
                ex.body += len(message.get("bytes") or b"") + len((message.get("text") or "").encode("utf-8", "replace"))
            elif kind == "websocket.accept":
                ex.status = 101
                ex.ttfb = perf_counter()
            elif kind == "websocket.close":
                if ex.status is None:
                    ex.status = 403
                if ex.ws_close is None:
                    ex.ws_close = message.get("code", 1000)
            elif kind == "websocket.http.response.start":
                ex.status = message["status"]
                ex.headers = message.get("headers")
            await send(message)

        raised = False
        try:
            await self.app(scope, watch_receive, watch_send)
        except BaseException:
            raised = True
            raise
        finally:
            try:
                flags = FLAG_WEBSOCKET | (FLAG_EXCEPTION if raised else 0)
                record = _new(Record, (self.shaper, scope, t0, perf_counter(), ex.ttfb, ex.status, ex.headers,
                                       ex.body, ex.received, flags, ex.ws_in, ex.ws_out, ex.ws_close))
                if self.filtered:
                    self._submit_filtered(record)
                else:
                    self.submit(record)
            except Exception:
                self.writer.loop_counts["internal_error"] += 1

    async def _lifespan(self, scope, receive, send):
        # Pass through untouched; on the way out of shutdown, write what is queued first (a
        # server such as uvicorn may re-raise SIGTERM afterwards, so atexit would never run).
        async def watch_send(message):
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self._close_off_loop()
            await send(message)

        await self.app(scope, receive, watch_send)

    async def _close_off_loop(self) -> None:
        if not self.writer.started:
            return
        try:
            # close, not flush: a held batch gets stop_timeout_ms more, then is counted.
            await asyncio.get_running_loop().run_in_executor(None, self.writer.close)
        except Exception:
            self.writer.loop_counts["internal_error"] += 1

    def _wanted(self, path: str) -> bool:
        if self.include and not self.include.match(path):
            return False
        return not (self.exclude and self.exclude.match(path))

    # ---- for people using it directly ------------------------------------------------------
    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything queued so far is written (True) or ``timeout`` passes (False)."""
        return self.writer.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush, then stop the writer thread of this file. A later request starts it again."""
        return self.writer.close(timeout)

    def stats(self) -> dict:
        """Rows written, batches, rows queued, and what was counted instead of written, per reason."""
        return self.writer.stats()


def _patterns(patterns: Sequence[str], option: str) -> Optional["re.Pattern[str]"]:
    """Glob patterns (``/static/*``, ``*.png``) as one compiled regex, or None when empty."""
    if isinstance(patterns, str):
        patterns = [patterns]
    parts = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{option}: found {pattern!r}, expected glob patterns like \"/static/*\"")
        parts.append(fnmatch.translate(pattern))
    return re.compile("|".join(parts)) if parts else None
