"""Write nginx and Apache access logs (combined and common formats) into a log database.

accesslog.py reads a log and gives each line's raw fields; here they become a request_log row
under the live logger's rules: the client address reduced by privacy.AddressPolicy, secret query
parameters and referers redacted by privacy.QueryRedactor, odd bytes backslash-escaped
(FLAG_REPLACED) and values cut at 1000 characters (FLAG_TRUNCATED) by accesslog.decode, lookup ids
resolved; every row carries FLAG_IMPORTED. Lines are written in chunks of about CHUNK_BYTES, one
BEGIN IMMEDIATE transaction each, which also updates the rollups and records how far the source
has been read.

Two threads share the work, so that an import uses both cores of a small machine: the caller's
shapes a chunk's lines into rows without touching the database, while a writer thread writes the
chunk before it, whose SQL (rows, lookups, rollups) runs without the GIL. A value the shaper has
not seen written yet gets a provisional id, -1, -2, ... in its chunk; the writer finds or inserts
those values with a statement or two per lookup table (LookupIds.ids_of), puts their ids in the
rows, and once the chunk is committed hands them back to the shaper's caches.

A source is known by the sha256 of its first line. Its row in ``import_sources`` holds how many
lines were imported, the sha256 of those bytes, and the sha256 at 1, 2, 4, 8... lines. A log read
again is checked against these: a log that grew is continued after its last imported line, a
gzipped or renamed copy is recognised, and one that only shares a first line is imported whole.
"""
from __future__ import annotations

import collections
import gc
import hashlib
import json
import os
import queue
import re
import sqlite3
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote_to_bytes

import sqlite_utils

from . import agents, schema
# FORMATS and LogError are the reader's, imported here too because the import command, the tests
# and docs/import.md reach them as importer.FORMATS and importer.LogError.
from .accesslog import (CACHE_LIMIT, FORMATS, SECOND_MS, STATUS_CODES, Lines, LogError, Reader, decode,
                        microseconds, split_request, unescape)
from .counters import Counters
from .failures import is_locked, retry_while_locked
from .inserts import insert_sql, statement_sizes
from .lookups import BUCKET, LookupIds
from .privacy import AddressPolicy, QueryRedactor
from .record import FLAG_BUCKETED, FLAG_IMPORTED
from .rollups import Rollups

__all__ = ["CHUNK_BYTES", "FORMATS", "ImportResult", "Importer", "LogError", "SHOWN_UNPARSED", "import_logs", "name_of"]

# Decompressed bytes of complete lines per transaction: about 5,000 combined lines, so that a
# live logger of the same file waits a tenth of a second or so for the write lock (docs/import.md).
CHUNK_BYTES = 1024 * 1024
SHOWN_UNPARSED = 5
# sys.setswitchinterval() while an import runs (Python's default is 5 ms), restored after it.
SWITCH_INTERVAL_S = 0.00005
# gc.set_threshold() while an import runs, restored after it: each chunk leaves thousands of
# containers alive for a while (its lines' fields, its rows), and at Python's default thresholds
# (700, 10, 10) collecting them took an eighth of the shaper's time; an import makes no cycles.
GC_THRESHOLDS = (100_000, 50, 1_000)
# Rows per INSERT: four times the live writer's, since each statement costs the writer thread a
# wait for the GIL; a statement this large takes ~50 ms to prepare, once per connection.
ROWS_PER_STATEMENT = 256
# The columns an imported row binds; the others (headers a log does not carry) stay NULL.
COLUMNS = ("start_ms", "http_status", "body_size", "flags", "method_id", "path_id", "query_string_id",
           "user_agent_id", "referer_id", "client_ip_id")
TIMED_COLUMNS = COLUMNS + ("duration_us",)
# A chunk's rows are 64-bit integers laid end to end in an array rather than a list of int
# objects: the writer binds them from contiguous memory, not from objects scattered over the heap
# (an import a few per cent faster), and the garbage collector has nothing in them to visit. A
# row with no duration in a timed chunk holds NO_DURATION, which the INSERT stores as NULL.
ROWS_TYPE = "q"
NO_DURATION = -1
_NULL_AS = (("duration_us", NO_DURATION),)
# Where patched() finds a row's flags and its lookup ids (the columns from method_id on).
_FLAGS, _FIRST_ID = COLUMNS.index("flags"), COLUMNS.index("method_id")
_IDS = len(COLUMNS) - _FIRST_ID

_IPV4 = re.compile(rb"((?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){2})\.(\d{1,3})")
_NOTHING = (0, 0)
_SOURCES_TABLE = {"id": int, "first_line": str, "name": str, "lines": int, "bytes": int, "sha256": str,
                  "checkpoints": str, "rows": int, "unparsed": int, "first_ms": int, "last_ms": int}


@dataclass
class ImportResult:
    """What importing one log did. ``lines`` = already_imported + imported + unparsed."""

    log: str
    lines: int = 0
    imported: int = 0
    already_imported: int = 0
    unparsed: int = 0
    unparsed_lines: List[Tuple[int, str]] = field(default_factory=list)  # (line number, text), the first few
    held: bool = False  # a last line without a newline, in a file that may still grow: read next time


class _Fingerprint:
    """The sha256 of a source's lines so far, with the digests after 1, 2, 4, 8... lines."""

    def __init__(self, lines: int = 0, size: int = 0, digest=None, checkpoints: Optional[Dict[int, str]] = None):
        self.hash = digest or hashlib.sha256()
        self.lines, self.bytes = lines, size
        self.checkpoints: Dict[int, str] = dict(checkpoints or {})

    def copy(self) -> "_Fingerprint":
        return _Fingerprint(self.lines, self.bytes, self.hash.copy(), self.checkpoints)

    def feed(self, piece: bytes, start: int = 0, until: Optional[int] = None) -> int:
        """Hash whole lines of ``piece`` from ``start`` until line ``until`` or the piece's end,
        noting the digest at each power of two; returns the offset reached."""
        end = len(piece)
        view = memoryview(piece)
        while start < end:
            target = 1 << self.lines.bit_length()  # the next power of two
            if until is not None and until < target:
                target = until
            wanted = target - self.lines
            available = piece.count(b"\n", start, end) + (piece[end - 1] != 10)  # a last line may lack "\n"
            if available <= wanted:
                stop, got = end, available
            else:
                stop, got = start, wanted
                for _ in range(wanted):
                    stop = piece.find(b"\n", stop, end) + 1
            self.hash.update(view[start:stop])
            self.lines += got
            self.bytes += stop - start
            start = stop
            if self.lines & (self.lines - 1) == 0:
                self.checkpoints[self.lines] = self.hash.hexdigest()
            if self.lines == until:
                break
        return start


@dataclass
class _Chunk:
    """A chunk's lines shaped into rows, handed from the shaper to the writer thread."""

    first_number: int  # lines of the source before this chunk's first
    progress: tuple  # the fingerprint after it: lines, bytes, sha256, checkpoints (JSON)
    flat: array = field(default_factory=lambda: array(ROWS_TYPE))  # rows of COLUMNS, or TIMED_COLUMNS when timed
    rows: int = 0
    timed: bool = False
    unparsed: List[Tuple[int, bytes]] = field(default_factory=list)
    new_values: List[Tuple[str, str]] = field(default_factory=list)  # (table, text) of provisional id -(i + 1)
    provisional: List[Tuple[dict, bytes, tuple]] = field(default_factory=list)  # cache entries holding them
    resolved: List[Tuple[int, int]] = field(default_factory=list)  # (id, flags) of each new value, once written


@dataclass
class _Source:
    """The log being imported, as the writer thread records it in import_sources."""

    id: Optional[int]
    first_line: str
    candidates: int
    name: str
    result: ImportResult


class _ChunkWriter:
    """Writes chunks in order on a thread of its own while the caller shapes the next ones.

    At most two chunks wait for it. After an error it writes nothing more: the error is raised to
    the caller at its next put() or at close().
    """

    def __init__(self, write: Callable[[_Chunk], None]):
        self._write = write
        self._queue: "queue.Queue[Optional[_Chunk]]" = queue.Queue(maxsize=1)
        self.written: "collections.deque[_Chunk]" = collections.deque()  # committed, for the shaper
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="asgi-log-to-sqlite import writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._error is None:
                try:
                    self._write(chunk)
                    self.written.append(chunk)
                except BaseException as error:  # raised to the caller
                    self._error = error

    def put(self, chunk: _Chunk) -> None:
        self._raise()
        self._queue.put(chunk)

    def stop(self) -> None:
        """Write what waits, and end the thread."""
        self._queue.put(None)
        self._thread.join()

    def close(self) -> None:
        """stop(), then raise the writer's error if it had one."""
        self.stop()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


@dataclass
class _Candidate:
    """An import_sources row whose first line matches the log being read."""

    id: int
    lines: int
    bytes: int
    sha256: str
    checkpoints: Dict[int, str]

    def next_stop(self, lines: int) -> int:
        later = [n for n in self.checkpoints if lines < n < self.lines]
        return min(later) if later else self.lines


class Importer:
    """Imports access logs into the log file ``path`` on one connection of its own.

    Safe beside a live logger of the same file: each chunk is one BEGIN IMMEDIATE transaction,
    retried while the file is locked. While import_log runs, a writer thread of its own writes the
    chunks, Python's switch interval is SWITCH_INTERVAL_S and the garbage collector's thresholds
    are GC_THRESHOLDS (all as before once it returns).
    """

    def __init__(self, path: str, *, log_format: str = "auto", client_ip: str = "truncate",
                 redact_params: Sequence[str] = (), max_distinct_values: Optional[int] = None,
                 visitors: bool = False, chunk_bytes: int = CHUNK_BYTES, busy_timeout_ms: int = 5_000, lock_deadline_s: float = 60.0):
        self.lines = Lines(log_format)  # ValueError for a format out of FORMATS
        if isinstance(redact_params, str):
            raise ValueError(f"redact_params={redact_params!r}: expected a list of parameter names, not one string")
        self.path = path
        self.addresses = AddressPolicy(client_ip)
        self._by_subnet = self.addresses.mode == "truncate" and self.addresses.ipv4_prefix <= 24
        self.redactor = QueryRedactor(redact_params)
        self.chunk_bytes = chunk_bytes
        self.lock_deadline_s = lock_deadline_s
        self.counters = Counters(path, (
            f"a lookup table reached max_distinct_values={max_distinct_values}; new values are stored as "
            f"{BUCKET!r} on rows flagged {FLAG_BUCKETED}, and counted in its log_counters table"))
        self.lookups = LookupIds(self.counters, max_distinct_values)
        # No request waits on an import: every new agent gets ua-parser's classes, where the
        # live writer caps that at a rate and gives the rest the bot flag only.
        self.lookups.classifier = agents.Classifier(per_second=None)
        # Days that are over have no salt left in the file: ``visitors`` gives each one a salt
        # held in memory for this import only, so that their distinct visitors are counted.
        self.rollups = Rollups()
        self.rollups.visitors_of_closed_days = visitors
        # Used by the writer thread during an import, by the caller's thread before and after it.
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000, check_same_thread=False)
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "request_log" not in tables:
                raise LogError(f"{path}: not a request log (it has tables, but no request_log)")
            schema.ensure_schema(self.conn)
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.lookups.conn = self.conn
            self._locked(self._create_table)
        except BaseException:
            self.conn.close()
            raise
        self._forget()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Importer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- one log -------------------------------------------------------------------------------
    def import_log(self, name: str, progress: Optional[Callable[[int], None]] = None) -> ImportResult:
        """Import one access log (a path, or "-" for standard input).

        ``progress`` is called after each chunk with the bytes of the log read so far (of the
        compressed file, for a gzipped one).
        """
        reader = Reader(name, self.chunk_bytes)
        try:
            return self._import(reader, progress or (lambda done: None))
        finally:
            reader.close()

    def _import(self, reader: Reader, progress: Callable[[int], None]) -> ImportResult:
        result = ImportResult(reader.name)
        first = reader.piece()
        if first is None:
            result.held = reader.held
            return result
        first_line = hashlib.sha256(first[:first.find(b"\n") + 1 or len(first)]).hexdigest()
        candidates = self._candidates(first_line)
        reader.unread(first)
        fingerprint, source_id = _Fingerprint(), None
        if candidates:
            found = self._skip(reader, fingerprint, candidates)
            if found is None:  # every line read was imported before, as part of a longer log
                result.lines = result.already_imported = fingerprint.lines
                progress(reader.position)
                return result
            source_id, fingerprint = found
        reader.keep_no_more()
        result.lines = result.already_imported = fingerprint.lines
        source = _Source(source_id, first_line, len(candidates), name_of(reader.name), result)
        # The writer gives the GIL up at each statement and waits to have it back; at Python's
        # 5 ms switch interval it would spend most of a chunk waiting behind the shaper.
        interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
        sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
        gc.set_threshold(*(max(mine, theirs) for mine, theirs in zip(GC_THRESHOLDS, thresholds)))
        writer = _ChunkWriter(lambda chunk: self._locked(lambda: self._write(chunk, source)))
        try:
            try:
                while True:
                    piece = reader.piece()
                    if piece is None:
                        break
                    self._learn(writer.written)
                    writer.put(self._shape(piece, fingerprint))
                    progress(reader.position)
            except BaseException:
                writer.stop()
                raise
            writer.close()
        finally:
            sys.setswitchinterval(interval)
            gc.set_threshold(*thresholds)
        self._learn(writer.written)
        result.held = reader.held
        return result

    def _skip(self, reader: Reader, fingerprint: _Fingerprint, candidates: List[_Candidate]):
        """Read the lines a candidate holds already. Returns (its id, the fingerprint there), or
        (None, a fresh fingerprint) to import from the first line, or None when the log ended first."""
        alive, matched = list(candidates), []
        while alive:
            piece = reader.piece()
            if piece is None:
                return None
            taken = 0
            while taken < len(piece) and alive:
                stop = min(c.next_stop(fingerprint.lines) for c in alive)
                taken = fingerprint.feed(piece, taken, until=stop)
                if fingerprint.lines != stop:
                    continue
                for candidate in list(alive):
                    expected = candidate.checkpoints.get(stop)
                    if expected is not None and fingerprint.checkpoints.get(stop) != expected:
                        alive.remove(candidate)
                    elif stop == candidate.lines:
                        alive.remove(candidate)
                        if fingerprint.hash.hexdigest() == candidate.sha256:
                            matched.append((candidate, fingerprint.copy()))
            if taken < len(piece):
                reader.unread(piece[taken:])
        if not matched:
            reader.rewind(0)
            return None, _Fingerprint()
        candidate, there = max(matched, key=lambda found: found[0].lines)
        if there.bytes != fingerprint.bytes:
            reader.rewind(there.bytes)
        return candidate.id, there

    def _write(self, chunk: _Chunk, source: _Source) -> None:
        """One chunk in one transaction, on the writer thread: its new lookup values, rows,
        rollups, counters and the source's progress."""
        conn = self.conn
        counted = self.counters.checkpoint()
        conn.execute("BEGIN IMMEDIATE")
        try:
            resolved = self._resolve(chunk.new_values)
            columns = TIMED_COLUMNS if chunk.timed else COLUMNS
            flat = patched(chunk.flat, len(columns), resolved)
            last_id, start = 0, 0
            for count in statement_sizes(chunk.rows, ROWS_PER_STATEMENT):
                end = start + count * len(columns)
                last_id = conn.execute(insert_sql(count, columns, _NULL_AS), flat[start:end]).lastrowid
                start = end
            if chunk.rows:
                # One transaction under the write lock: its rows have consecutive ids.
                self.rollups.update(conn, last_id - chunk.rows + 1, last_id)
            source_id = self._record(source, chunk)
            stored = self.counters.persist(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self.counters.restore(counted)
            self.lookups.forget()  # ids inserted by the rolled-back transaction are gone
            raise
        self.counters.committed(stored)
        source.id = source_id
        chunk.resolved, chunk.flat = resolved, array(ROWS_TYPE)
        result = source.result
        result.lines += chunk.rows + len(chunk.unparsed)
        result.imported += chunk.rows
        result.unparsed += len(chunk.unparsed)
        for number, line in chunk.unparsed[:SHOWN_UNPARSED - len(result.unparsed_lines)]:
            result.unparsed_lines.append((number, line[:300].decode("utf-8", "backslashreplace")))

    def _resolve(self, new_values: List[Tuple[str, str]]) -> List[Tuple[int, int]]:
        """(id, flags) of each (table, text) of ``new_values``, found or inserted table by table."""
        by_table: Dict[str, List[int]] = {}
        for index, (table, _) in enumerate(new_values):
            by_table.setdefault(table, []).append(index)
        resolved: List[Tuple[int, int]] = [_NOTHING] * len(new_values)
        for table, indexes in by_table.items():
            for index, looked in zip(indexes, self.lookups.ids_of(table, [new_values[i][1] for i in indexes])):
                resolved[index] = looked
        return resolved

    def _record(self, source: _Source, chunk: _Chunk) -> int:
        """Store how far the source is imported; refuse when another import of it moved it meanwhile."""
        conn, now, name = self.conn, int(time.time() * 1000), source.name
        progress = chunk.progress + (name, chunk.rows, len(chunk.unparsed), now)
        if source.id is None:
            if conn.execute("SELECT count(*) FROM import_sources WHERE first_line = ?",
                            (source.first_line,)).fetchone()[0] != source.candidates:
                raise LogError(f"{name}: another import of this log started meanwhile; run this one again "
                               "once it has finished, and it goes on from where that one stopped")
            return conn.execute(
                "INSERT INTO import_sources (lines, bytes, sha256, checkpoints, name, rows, unparsed, last_ms, "
                "first_ms, first_line) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", progress + (now, source.first_line)).lastrowid
        changed = conn.execute(
            "UPDATE import_sources SET lines = ?, bytes = ?, sha256 = ?, checkpoints = ?, name = ?, "
            "rows = rows + ?, unparsed = unparsed + ?, last_ms = ? WHERE id = ? AND lines = ?",
            progress + (source.id, chunk.first_number)).rowcount
        if changed != 1:
            raise LogError(f"{name}: another import of this log is writing it too; run this one again "
                           "once it has finished, and it goes on from where that one stopped")
        return source.id

    # ---- lines to rows -------------------------------------------------------------------------
    def _shape(self, piece: bytes, fingerprint: _Fingerprint) -> _Chunk:
        """The rows of ``piece``'s lines, for the writer thread; its lines are fed to ``fingerprint``."""
        first_number = fingerprint.lines
        fingerprint.feed(piece)
        chunk = _Chunk(first_number, (fingerprint.lines, fingerprint.bytes, fingerprint.hash.hexdigest(),
                                      json.dumps(fingerprint.checkpoints)))
        self._timed, self._new, self._provisional = False, {}, chunk.provisional
        chunk.rows = self._rows(piece, first_number, chunk.flat, chunk.unparsed)
        chunk.timed, chunk.new_values = self._timed, list(self._new)
        # Provisional ids mean something in this chunk only: the next one looks its values up again
        # until the writer hands their ids back (_learn).
        for cache, raw, _ in chunk.provisional:
            cache.pop(raw, None)
        return chunk

    def _learn(self, written: "collections.deque[_Chunk]") -> None:
        """Cache the ids the writer gave the new values of the chunks it committed."""
        while written:
            chunk = written.popleft()
            for cache, raw, looked in chunk.provisional:
                self._cached(cache)[raw] = resolved_entry(looked, chunk.resolved)

    def _rows(self, piece: bytes, number: int, flat: array, unparsed: list) -> int:
        """Shape the lines of ``piece`` (the first is line ``number`` + 1) onto ``flat`` or
        ``unparsed``; returns how many rows were added. Rows are of COLUMNS until a line carries
        a duration, then of TIMED_COLUMNS (self._timed), in the order of their lines.

        One loop over the chunk pattern's fields (accesslog.Lines.split), the line's time and
        each value found in caches keyed by their raw bytes: the per-line work of the import.
        """
        requests, agents, referers, clients = self._requests, self._agents, self._referers, self._clients
        extend, append = flat.extend, flat.append
        lines, seconds_of, statuses = self.lines, SECOND_MS, STATUS_CODES
        minutes, zone_of = {}, None
        timed = self._timed
        first, before = number, len(unparsed)
        texts = None  # the piece's lines, split only when a line's time is wrong
        for address, minute, second, zone, request, status, size, referer, agent, took, other in lines.split(piece):
            number += 1
            if address:
                try:
                    if zone != zone_of:
                        minutes, zone_of = lines.minutes(zone), zone
                    start_ms = (minutes.get(minute) or lines.minute_ms(minute, zone)) + seconds_of[second]
                except (ValueError, KeyError):
                    texts = texts or piece.split(b"\n")
                    unparsed.append((number, texts[number - first - 1].rstrip(b"\r")))
                    continue
                status = statuses[status]
                size = 0 if size == b"-" else int(size)
                duration = microseconds(took) if took else None
            else:
                fields = lines.line(other, number, unparsed)
                if fields is None:
                    continue
                start_ms, address, request, status, size, referer, agent, duration = fields
            r = requests.get(request) or self._request(request)
            a = agents.get(agent) or self._value(agents, "user_agents", agent)
            f = referers.get(referer) or self._value(referers, "referers", referer, self.redactor.redact_url)
            c = clients.get(address) or self._client(address)
            row = (start_ms, status, size, FLAG_IMPORTED | r[3] | a[1] | f[1] | c[1], r[0], r[1], r[2], a[0], f[0], c[0])
            extend(row)
            if duration is not None:
                if not timed:
                    timed = self._widen(flat)
                append(duration)
            elif timed:
                append(NO_DURATION)
        self._timed = timed
        return number - first - (len(unparsed) - before)

    def _widen(self, flat: array) -> bool:
        """Rows of COLUMNS so far become rows of TIMED_COLUMNS (with NO_DURATION): the first line
        with a duration was met, and is the last row of ``flat`` so far, its duration not yet
        appended. Returns True, what self._timed is from now on."""
        width = len(COLUMNS)
        earlier = len(flat) - width
        flat[:earlier] = array(ROWS_TYPE, [value for start in range(0, earlier, width)
                                           for value in (*flat[start:start + width], NO_DURATION)])
        self._timed = True
        return True

    def _request(self, raw: bytes) -> Tuple[int, int, int, int]:
        """(method id, path id, query string id, flags) of a request line ("GET /p?q=1 HTTP/1.1")."""
        method, path, query = split_request(raw)
        m = self._methods.get(method) or self._value(self._methods, "methods", method, escaped=False)
        p = self._paths.get(path) or self._value(self._paths, "paths", path, escaped=False, dash=None)
        q = (self._queries.get(query) or
             self._value(self._queries, "query_strings", query, self.redactor.redact_query, escaped=False, dash=None))
        looked = (m[0], p[0], q[0], m[1] | p[1] | q[1])
        self._cache(self._requests, raw, looked)
        return looked

    def _value(self, cache: dict, table: str, raw: Optional[bytes], redact=None, *, escaped: bool = True,
               dash: Optional[bytes] = b"-") -> Tuple[int, int]:
        """(id, flags) of a raw value decoded, redacted and cut as record.py does (accesslog.decode),
        cached by its raw bytes; (0, 0) for none (missing, empty, or the log's ``dash`` for "none")."""
        looked = _NOTHING
        if raw and raw != dash:
            value = unescape(raw) if escaped else raw
            if table == "paths" and b"%" in value:
                value = unquote_to_bytes(value)  # as an ASGI server decodes scope["path"]
            text, flags = decode(value, redact)
            looked = (self._provisional_id(table, text), flags)
        self._cache(cache, raw, looked)
        return looked

    def _client(self, raw: bytes) -> Tuple[int, int]:
        """(id, 0) of a client address as AddressPolicy reduces it; (0, 0) when it is not stored."""
        subnet = _IPV4.fullmatch(raw) if self._by_subnet else None
        if subnet is not None and _octet(subnet.group(2)):
            # An IPv4 address truncated to /24 or less: its first three octets decide the result,
            # and for /24 it is them and ".0" (the octets are canonical), found without ipaddress,
            # which costs ~10 us an address: 40,000 clients would take a tenth of the import.
            key = subnet.group(1)
            looked = self._subnets.get(key)
            if looked is None:
                if self.addresses.ipv4_prefix == 24:
                    looked = (self._provisional_id("client_ips", key.decode() + ".0"), 0)
                else:
                    looked = self._address(key.decode() + ".0")
                self._cache(self._subnets, key, looked)
        else:
            try:
                looked = self._address(raw.decode("ascii"))
            except UnicodeDecodeError:
                looked = _NOTHING  # not an address: nothing identifying is kept
        self._cache(self._clients, raw, looked)
        return looked

    def _address(self, address: str) -> Tuple[int, int]:
        text = self.addresses.reduce(address)
        return _NOTHING if text is None else (self._provisional_id("client_ips", text), 0)

    def _provisional_id(self, table: str, text: str) -> int:
        """The id, in the chunk being shaped, of a value the writer will find or insert: -1, -2, ..."""
        key = (table, text)
        found = self._new.get(key)
        if found is None:
            found = self._new[key] = -1 - len(self._new)
        return found

    def _cache(self, cache: dict, raw: Optional[bytes], looked: tuple) -> None:
        """Cache an entry (ids..., flags), noting it when it holds a provisional id."""
        self._cached(cache)[raw] = looked
        if min(looked) < 0:
            self._provisional.append((cache, raw, looked))

    def _cached(self, cache: dict) -> dict:
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
            cache[None] = _NOTHING
        return cache

    def _forget(self) -> None:
        self._timed = False  # whether the chunk being shaped binds TIMED_COLUMNS
        self._new: Dict[Tuple[str, str], int] = {}  # the chunk's new values and their provisional ids
        self._provisional: List[Tuple[dict, bytes, tuple]] = []
        self._requests: Dict[Optional[bytes], tuple] = {}
        self._agents: Dict[Optional[bytes], tuple] = {None: _NOTHING}
        self._referers: Dict[Optional[bytes], tuple] = {None: _NOTHING}
        self._clients: Dict[Optional[bytes], tuple] = {}
        self._subnets: Dict[bytes, tuple] = {}
        self._methods: Dict[Optional[bytes], tuple] = {None: _NOTHING}
        self._paths: Dict[Optional[bytes], tuple] = {None: _NOTHING}
        self._queries: Dict[Optional[bytes], tuple] = {None: _NOTHING}

    # ---- the import_sources table --------------------------------------------------------------
    def _create_table(self) -> None:
        conn = self.conn
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'import_sources'").fetchone():
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
            # Run, not Table.create(): sqlite-utils 3.x would commit inside it.
            conn.execute(db.create_table_sql("import_sources", _SOURCES_TABLE, pk="id", if_not_exists=True,
                                             not_null=["first_line", "lines", "bytes", "sha256"]))
            conn.execute("CREATE INDEX IF NOT EXISTS idx_import_sources_first_line ON import_sources (first_line)")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _candidates(self, first_line: str) -> List[_Candidate]:
        rows = self.conn.execute("SELECT id, lines, bytes, sha256, checkpoints FROM import_sources WHERE first_line = ?",
                                 (first_line,)).fetchall()
        return [_Candidate(i, lines, size, digest, {int(n): h for n, h in json.loads(points).items()})
                for i, lines, size, digest, points in rows]

    def _locked(self, action: Callable):
        """Run ``action`` (one transaction), again while another connection holds the write lock."""
        try:
            return retry_while_locked(action, self.lock_deadline_s, first_delay=0.05, longest_delay=1.0)
        except sqlite3.OperationalError as error:
            if not is_locked(error):
                raise
            raise LogError(f"{self.path}: still locked by another connection after "
                           f"{self.lock_deadline_s:g} s; nothing of the current chunk was written") from None


def import_logs(path: str, logs: Sequence[str], **options) -> List[ImportResult]:
    """Import each of ``logs`` into the log file ``path`` (Importer's options); one result per log."""
    with Importer(path, **options) as importer:
        return [importer.import_log(log) for log in logs]


def name_of(path: str) -> str:
    """How a source is named in import_sources: its absolute path, or "-" for standard input."""
    return path if path == "-" else os.path.abspath(path)


def resolved_entry(looked: tuple, resolved: Sequence[Tuple[int, int]]) -> tuple:
    """A cache entry (ids..., flags) with each provisional id -(i + 1) replaced by resolved[i]'s
    id and its flags added."""
    *ids, flags = looked
    for position, value in enumerate(ids):
        if value < 0:
            ids[position], more = resolved[-1 - value]
            flags |= more
    return (*ids, flags)


def patched(flat: array, width: int, resolved: Sequence[Tuple[int, int]]) -> array:
    """A copy of ``flat`` (rows of ``width`` values laid end to end, COLUMNS' order) with each
    provisional id -(i + 1) in the id columns replaced by resolved[i]'s id, and its flags added to
    the row's: a column at a time, since a chunk's rows hold few provisional ids."""
    if not resolved:
        return flat
    ids = [found for found, _ in resolved]
    out = array(ROWS_TYPE, flat)
    for column in range(_FIRST_ID, _FIRST_ID + _IDS):
        values = flat[column::width]
        if min(values, default=0) < 0:
            out[column::width] = array(ROWS_TYPE, [ids[-1 - value] if value < 0 else value for value in values])
    more = [extra for _, extra in resolved]
    if any(more):  # a value past max_distinct_values: its rows get FLAG_BUCKETED
        for start in range(0, len(flat), width):
            extra = 0
            for value in flat[start + _FIRST_ID:start + _FIRST_ID + _IDS]:
                if value < 0:
                    extra |= more[-1 - value]
            out[start + _FLAGS] |= extra
    return out


def _octet(text: bytes) -> bool:
    """Whether ``text`` is an IPv4 octet as ipaddress accepts it: 0-255, no leading zero."""
    return int(text) <= 255 and (len(text) == 1 or text[:1] != b"0")
