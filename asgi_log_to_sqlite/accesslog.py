"""Read nginx and Apache access logs (combined and common formats): the bytes and the fields of each line.

Reader gives a log's decompressed bytes (plain, gzip, or standard input) as pieces of complete
lines; Lines matches a piece's lines with one pattern in one pass and gives the raw fields of
those it leaves (time in epoch ms, address, request line, status, size, referer, agent, duration); split_request, unescape and decode take a field's bytes
apart as record.py would (odd bytes backslash-escaped, values cut at MAX_VALUE_LENGTH). Nothing
here touches a database: importer.py writes what these return.
"""
from __future__ import annotations

import datetime
import os
import re
import stat
import sys
import tempfile
import zlib
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from .record import FLAG_REPLACED, FLAG_TRUNCATED

FORMATS = ("auto", "combined", "common")
MAX_VALUE_LENGTH = 1000
# Distinct raw values kept per kind before a cache starts over (a scanner's flood of paths).
CACHE_LIMIT = 200_000
# Bytes of a chunk one pass of its pattern reads (Lines.split), give or take a line.
SPLIT_BYTES = 2048
_BLOCK = 1024 * 1024

# host ident user [10/Oct/2000:13:55:36 -0700] "request" status size, then "referer" "agent" for
# combined, then an optional duration; the time in three groups (minute, second, zone). nginx
# writes '"' and '\\' as \x22 and \x5C, so a quoted field of nginx's is [^"\\]*; a line with a
# backslash in a field (Apache writes \") takes the slower escape-aware pattern.
_HEAD = rb'(\S+) \S+ \S+ \[(\d\d/[A-Za-z]{3}/\d{4}:\d\d:\d\d):(\d\d) ([+-]\d{4})\] %s (\d{3}) (\d{1,18}|-)'
_DURATION = rb'(?: (\d{1,12}(?:\.\d{1,9})?))?'
# Fields past the duration are ignored in combined lines: nginx's default "main" format adds
# "$http_x_forwarded_for". The empty groups of common stand for referer and agent, so that both
# formats give the same ten groups.
_ENDS = {"combined": (rb" %s %s" + _DURATION, rb"(?= |\Z)", rb"(?: [^\n]*)?\r?\n"),
         "common": (rb"(){0}(){0}" + _DURATION, rb"\Z", rb"\r?\n")}


def _pattern(log_format: str, quoted: bytes, *, chunk: bool) -> "re.Pattern[bytes]":
    """One format's pattern: of one line, or (``chunk``) of each line in a chunk's bytes, one match
    a line: a line it does not take is the eleventh group, whole, for the line patterns."""
    fields, line_end, chunk_end = _ENDS[log_format]
    text = _HEAD.replace(b"%s", quoted) + fields.replace(b"%s", quoted)
    if chunk:
        return re.compile(text + chunk_end + rb"|([^\n]*)\n")
    return re.compile(text + line_end, re.S)


_LINE_PATTERNS = {(log_format, escaped): _pattern(log_format, rb'"((?:[^"\\]|\\.)*)"' if escaped else rb'"([^"\\]*)"',
                                                  chunk=False)
                  for log_format in _ENDS for escaped in (True, False)}
_CHUNK_PATTERNS = {log_format: _pattern(log_format, rb'"([^"\\\n]*)"', chunk=True) for log_format in _ENDS}
# The same with a field that only a quote ends: sre scans a one-byte negated class several times
# faster than a three-byte one, and Lines.split sends it back to the strict one where they differ.
_LOOSE_PATTERNS = {log_format: _pattern(log_format, rb'"([^"]*)"', chunk=True) for log_format in _ENDS}
# A line the chunk pattern leaves: ten fields missing, then the line itself.
_LEFT = (b"",) * 10
SECOND_MS = {b"%02d" % second: second * 1000 for second in range(61)}  # 60: a leap second
STATUS_CODES = {b"%03d" % status: status for status in range(1000)}
# METHOD target [HTTP/x.y]. Greedy, not (.+?) before an optional version: that tries the version at
# every byte of the target, three times slower; a version can end the line at one place only, so
# the two agree (tests/test_importer.py checks it).
_REQUEST = re.compile(rb"([A-Z][A-Z0-9_-]{0,31}) (?:(.+) HTTP/\d(?:\.\d)?|(.+))\Z", re.S)
_BACKSLASH = re.compile(rb"\\(x[0-9A-Fa-f]{2}|.)", re.S)
_ESCAPES = {b'"': b'"', b"\\": b"\\", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"v": b"\v", b"f": b"\f"}
_MONTHS = {name.encode(): number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_EPOCH = datetime.datetime(1970, 1, 1)
# Magic bytes of compressions we do not read, and the command that does.
_OTHER_COMPRESSION = ((b"BZh", "bzip2", "bzcat"), (b"\xfd7zXZ\x00", "xz", "xzcat"), (b"\x28\xb5\x2f\xfd", "zstd", "zstdcat"))
# (start_ms, address, request line, status, body size, referer, agent, duration_us or None)
Fields = Tuple[int, bytes, bytes, int, int, Optional[bytes], Optional[bytes], Optional[int]]


class LogError(Exception):
    """A log that cannot be imported (missing, compressed otherwise, cut short, busy): one line for the user."""


class Reader:
    """A log's decompressed bytes as pieces of complete lines; gzip found by its magic bytes."""

    def __init__(self, name: str, chunk_bytes: int):
        self.name = name
        self.chunk_bytes = chunk_bytes
        self.stdin = name == "-"
        self.growable = False
        self.held = False
        self.position = 0  # bytes of the file (compressed, if it is) read so far: for a progress bar
        self._replay = None
        # Standard input cannot be read twice: its bytes are kept until it is known whether lines
        # skipped as already imported must be read after all (see importer.Importer._skip).
        self._spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024) if self.stdin else None
        self._open()

    def _open(self) -> None:
        if self.stdin:
            self._raw = sys.stdin.buffer
        else:
            try:
                self._raw = open(self.name, "rb")
            except FileNotFoundError:
                raise LogError(f"{self.name}: no such file") from None
            except IsADirectoryError:
                raise LogError(f"{self.name}: is a directory; give an access log file") from None
            except OSError as error:
                raise LogError(f"{self.name}: cannot be read ({error.strerror})") from None
            self.growable = stat.S_ISREG(os.fstat(self._raw.fileno()).st_mode)
        head = self._raw.read(_BLOCK)
        self.position = len(head)
        self.gzip = head[:2] == b"\x1f\x8b"
        for magic, kind, command in _OTHER_COMPRESSION:
            if head.startswith(magic):
                self.close()
                raise LogError(f"{self.name}: compressed with {kind}, which is not read here; "
                               f"pipe it in instead: {command} {self.name} | asgi-log-to-sqlite import FILE -")
        self.growable = self.growable and not self.gzip
        self._head, self._z, self._fed = head, zlib.decompressobj(wbits=31), False
        self._carry, self._pushed, self._eof = b"", None, False

    def close(self) -> None:
        if not self.stdin:
            self._raw.close()
        for spooled in (self._spool, self._replay):
            if spooled is not None:
                spooled.close()
        self._spool = self._replay = None

    def keep_no_more(self) -> None:
        """Stop keeping standard input's bytes: nothing read so far will be read again."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def rewind(self, offset: int) -> None:
        """Read again from decompressed byte ``offset``."""
        self._carry, self._pushed, self._eof, self.held = b"", None, False, False
        if self.stdin:
            spool = self._spool
            self._spool = None
            spool.seek(offset)
            self._replay = spool
            return
        self._raw.close()
        self._open()
        if not self.gzip:
            self._raw.seek(offset)
            self._head, self.position = b"", offset
            return
        while offset:
            block = self._block()
            if block is None:
                return
            if len(block) > offset:
                self._carry = block[offset:]
                return
            offset -= len(block)

    def unread(self, rest: bytes) -> None:
        self._pushed = rest

    def piece(self) -> Optional[bytes]:
        """The next complete lines, about chunk_bytes of them; None at the end."""
        if self._pushed is not None:
            piece, self._pushed = self._pushed, None
            return piece
        buffer = self._carry
        while True:
            if len(buffer) >= self.chunk_bytes:
                # Whole lines, up to chunk_bytes of them (or one longer line).
                cut = buffer.rfind(b"\n", 0, self.chunk_bytes) + 1 or buffer.find(b"\n", self.chunk_bytes) + 1
                if cut:
                    self._carry = buffer[cut:]
                    return buffer[:cut]
            block = self._block()
            if block is None:
                break
            buffer += block
        self._carry = b""
        cut = buffer.rfind(b"\n") + 1
        if cut < len(buffer) and (self.growable or self._eof == "truncated"):
            # A plain file may be mid-write: its last line is read whole by the next import.
            buffer, self.held = buffer[:cut], True
        if not buffer and self._eof == "truncated":
            raise LogError(f"{self.name}: the gzip data ends early (a file cut short, or still being written); "
                           "the lines before that point were imported")
        return buffer or None

    def _block(self) -> Optional[bytes]:
        if self._replay is not None:
            block = self._replay.read(_BLOCK)
            if block:
                return block
            self._replay.close()
            self._replay = None
        if self._eof:
            return None
        block = self._gunzip() if self.gzip else self._plain()
        if block is not None and self._spool is not None:
            self._spool.write(block)
        return block

    def _plain(self) -> Optional[bytes]:
        if self._head:
            block, self._head = self._head, b""
            return block
        block = self._raw.read(_BLOCK)
        self.position += len(block)
        if not block:
            self._eof = True
            return None
        return block

    def _gunzip(self) -> Optional[bytes]:
        while True:
            data, self._head = self._head, b""
            if not data:
                data = self._raw.read(_BLOCK)
                self.position += len(data)
            if not data:
                self._eof = "truncated" if self._fed else True
                return None
            try:
                out = self._z.decompress(data, 4 * _BLOCK)  # bounded: a small file may expand a thousandfold
            except zlib.error as error:
                raise LogError(f"{self.name}: not valid gzip data ({error})") from None
            self._fed = True
            self._head = self._z.unconsumed_tail
            if self._z.eof:
                # Another gzip member may follow (cat a.gz b.gz); zero padding ends the file.
                rest = self._z.unused_data + self._head
                self._z, self._fed = zlib.decompressobj(wbits=31), False
                self._head = b"" if not rest.strip(b"\0") else rest
            if out:
                return out


class Lines:
    """A chunk's lines as raw fields, in one format or ("auto") combined, else common, line by line.

    The importer's loop reads ``split``'s fields itself, with ``line``, ``minutes`` and
    ``minute_ms`` for what the chunk pattern leaves: one pass of one pattern over a chunk and no
    call per line is what makes the import as fast as it is (docs/import.md, "Speed").
    """

    def __init__(self, log_format: str = "auto"):
        if log_format not in FORMATS:
            raise ValueError(f"format {log_format!r}: expected one of {', '.join(FORMATS)}")
        if log_format == "auto":
            order = ("combined", "common")
        else:
            order = (log_format,)
        # The pattern of the first format takes a chunk's lines in one pass (findall); the lines it
        # leaves are tried one by one by the others, with and without backslash escapes, in order.
        self._loose = _LOOSE_PATTERNS[order[0]].findall
        self._strict = _CHUNK_PATTERNS[order[0]].findall
        self._slow = [_LINE_PATTERNS[name, escaped].match for name in order for escaped in (True, False)]
        self._minutes_by_zone: Dict[bytes, Dict[bytes, int]] = {}

    def split(self, piece: bytes) -> List[Tuple[bytes, ...]]:
        """One tuple per line of ``piece``, in order: (address, minute, second, zone, request line,
        status, size, referer, agent, duration, b""), b"" where a field is missing; or, for a line
        the chunk pattern does not take, b"" ten times and the line (without its "\\n"), for
        ``line``. The time is not checked: ``minute_ms`` raises ValueError or KeyError for one
        that cannot be.

        The loose pattern's fields may run on past a line's end (a line with an odd number of
        quotes: fewer tuples than lines) or end at Apache's \\" (a field with a backslash); the
        strict pattern, whose fields hold neither, decides those, as tests/test_importer.py checks.
        """
        if not piece.endswith(b"\n"):
            piece += b"\n"
        found: List[Tuple[bytes, ...]] = []
        start, end = 0, len(piece)
        while start < end:
            # A pattern holds the GIL for the whole of its pass: over SPLIT_BYTES at a time, the
            # importer's writer thread waits a few microseconds for it, not a millisecond.
            stop = piece.find(b"\n", start + SPLIT_BYTES - 1, end) + 1 or end
            found += self._split(piece[start:stop])
            start = stop
        return found

    def _split(self, piece: bytes) -> List[Tuple[bytes, ...]]:
        found = self._loose(piece)
        if len(found) != piece.count(b"\n"):
            return self._strict(piece)
        if b"\\" in piece:
            found = [fields if not fields[0] or b"\\" not in fields[4] + fields[7] + fields[8] else _LEFT + (text,)
                     for fields, text in zip(found, piece.split(b"\n"))]
        return found

    def line(self, line: bytes, number: int, unparsed: List[Tuple[int, bytes]]) -> Optional[Fields]:
        """One line the chunk pattern did not take, tried by the others: its Fields, or None
        with (number, line) put onto ``unparsed``."""
        if line.endswith(b"\r"):
            line = line[:-1]
        for match in self._slow:
            found = match(line)
            if found is not None:
                break
        else:
            unparsed.append((number, line))
            return None
        address, minute, second, zone, request, status, size, referer, agent, took = found.groups()
        try:
            start_ms = (self.minutes(zone).get(minute) or self.minute_ms(minute, zone)) + SECOND_MS[second]
        except (ValueError, KeyError):
            unparsed.append((number, line))
            return None
        return (start_ms, address, request, STATUS_CODES[status], 0 if size == b"-" else int(size), referer, agent,
                None if took is None else microseconds(took))

    def minutes(self, zone: bytes) -> Dict[bytes, int]:
        """The minute -> epoch milliseconds cache of one time zone ("+0200"), filled by minute_ms."""
        cache = self._minutes_by_zone.get(zone)
        if cache is None:
            cache = self._minutes_by_zone[zone] = {}
        return cache

    def minute_ms(self, minute: bytes, zone: bytes) -> int:
        """Epoch milliseconds of a time_local's minute ("10/Oct/2000:13:55") in ``zone`` ("-0700");
        ValueError or KeyError for a minute that cannot be."""
        local = datetime.datetime(int(minute[7:11]), _MONTHS[minute[3:6]], int(minute[0:2]),
                                  int(minute[12:14]), int(minute[15:17]))
        offset = (int(zone[1:3]) * 60 + int(zone[3:5])) * (-1 if zone[:1] == b"-" else 1)
        ms = (int((local - _EPOCH).total_seconds()) - offset * 60) * 1000
        cache = self.minutes(zone)
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[minute] = ms
        return ms


def split_request(raw: bytes) -> Tuple[Optional[bytes], Optional[bytes], Optional[bytes]]:
    """(method, path, query string) of a request line ("GET /p?q=1 HTTP/1.1"), escapes undone; a
    line that is not a request (a TLS handshake, a scanner's bytes) is kept as the path."""
    text = unescape(raw)
    found = _REQUEST.match(text)
    if found is not None:
        method, target = found.group(1), found.group(2) or found.group(3)
        path, _, query = target.partition(b"?")
        return method, path, query
    if text in (b"", b"-"):
        return None, None, None
    return None, text, None


def decode(raw: bytes, redact: Optional[Callable[[str], str]] = None) -> Tuple[str, int]:
    """Decode as record.py does: odd bytes backslash-escaped (FLAG_REPLACED), cut at MAX_VALUE_LENGTH."""
    flags = 0
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "backslashreplace")
        flags = FLAG_REPLACED
    if redact is not None:
        text = redact(text)
    if len(text) > MAX_VALUE_LENGTH:
        text = text[:MAX_VALUE_LENGTH]
        flags |= FLAG_TRUNCATED
    return text, flags


def unescape(raw: bytes) -> bytes:
    """The bytes behind nginx's \\xHH and Apache's \\" \\\\ \\n ... escapes."""
    if b"\\" not in raw:
        return raw
    return _BACKSLASH.sub(_unescaped, raw)


def _unescaped(found: "re.Match[bytes]") -> bytes:
    code = found.group(1)
    if len(code) == 3 and code[:1] == b"x":
        return bytes((int(code[1:], 16),))
    return _ESCAPES.get(code, found.group(0))


def microseconds(took: bytes) -> int:
    """A trailing duration: seconds with a decimal point (nginx $request_time), else microseconds (Apache %D)."""
    if b"." in took:
        return round(float(took) * 1_000_000)
    return int(took)
