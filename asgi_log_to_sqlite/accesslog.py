"""Read an access log: its decompressed bytes (plain, gzip, or standard input) as pieces of complete lines.

Nothing here touches a database: importer.py writes what these pieces hold.
"""
from __future__ import annotations

import os
import stat
import sys
import tempfile
import zlib
from typing import Optional

_BLOCK = 1024 * 1024
# Magic bytes of compressions we do not read, and the command that does.
_OTHER_COMPRESSION = ((b"BZh", "bzip2", "bzcat"), (b"\xfd7zXZ\x00", "xz", "xzcat"), (b"\x28\xb5\x2f\xfd", "zstd", "zstdcat"))


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
