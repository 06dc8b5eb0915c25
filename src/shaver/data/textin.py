"""Raw text input: decompression, encoding checks, and the line of a byte offset.

Raw text files must be UTF-8 (a leading UTF-8 byte-order mark is allowed and ignored).
Compressed files (``.gz``, ``.bz2``, ``.lz4``, ``.zst``) are read decompressed, as pyarrow
does. :func:`check_head` refuses UTF-16 and binary files before any parsing;
:class:`CheckedText` checks UTF-8 while pyarrow reads, so the parser never sees invalid
bytes and an error names the line and byte offset (in the decompressed text) of the first
bad byte. :func:`split_ranges` cuts a plain text file into line-aligned byte ranges
(:class:`TextRange`) read by parallel workers. Nothing here imports pyarrow unless a file
is compressed.
"""

from __future__ import annotations

import codecs
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from shaver.errors import DataError

#: Suffix -> pyarrow codec name (the suffixes pyarrow's readers decompress).
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".lz4": "lz4", ".zst": "zstd"}
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
#: Bytes :func:`check_head` looks at.
HEAD_BYTES = 1 << 16


def compression(path: Path) -> str | None:
    """The codec that ``path``'s suffix names, or None for plain text."""
    return COMPRESSIONS.get(Path(path).suffix)


def open_binary(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes, decompressed if its suffix says so."""
    codec = compression(path)
    if codec is None:
        return open(path, "rb")
    import pyarrow as pa

    return io.BufferedReader(_Stream(pa.input_stream(str(path), compression=codec)), 1 << 20)


class _Stream(io.RawIOBase):
    """A pyarrow input stream as a raw Python file (for buffered, line-wise reading)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._stream.close()
        super().close()


def not_utf8(path: Path, line: int, byte: int, offset: int) -> DataError:
    """The error for a byte that is not UTF-8 (``line`` 1-based, ``offset`` in bytes)."""
    return DataError(f"{path}:{line}: not UTF-8 text (byte 0x{byte:02X} at offset {offset}); "
                     "is this the right file?")


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of the (decompressed) text."""
    try:
        with open_binary(path) as f:
            return f.read(size)
    except OSError as exc:  # also a damaged archive
        raise DataError(f"{path}: cannot read the input ({exc.strerror or exc})") from exc


def check_head(path: Path) -> None:
    """Refuse a file whose first bytes are not UTF-8 text: UTF-16, binary, other encodings."""
    head = read_head(path)
    if head.startswith(UTF16_BOMS):
        raise DataError(f"{path}:1: UTF-16 text (it starts with a UTF-16 byte-order mark); "
                        "save it as UTF-8 and try again")
    nul = head.find(b"\0")
    bad = first_bad_byte(head[:nul] if nul >= 0 else head, final=len(head) < HEAD_BYTES)
    if bad is not None:
        raise not_utf8(path, head.count(b"\n", 0, bad) + 1, head[bad], bad)
    if nul >= 0:
        line = head.count(b"\n", 0, nul) + 1
        raise DataError(f"{path}:{line}: not text (a NUL byte at offset {nul}: UTF-16 or "
                        "binary data); is this the right file?")


def first_bad_byte(data: bytes, final: bool = True) -> int | None:
    """Offset of the first byte of ``data`` that is not UTF-8; None if all is (without
    ``final``, a multi-byte character cut at the end is not an error)."""
    if data.isascii():
        return None
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final)
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def header_line(path: Path, sep: str) -> list[str]:
    """The names on the first line (UTF-8 byte-order mark dropped, quotes stripped)."""
    with open_binary(path) as f:
        raw = f.readline()
    bad = first_bad_byte(raw)
    if bad is not None:
        raise not_utf8(path, 1, raw[bad], bad)
    names = raw.decode("utf-8-sig").rstrip("\r\n").split(sep)
    return [n.strip('"') for n in names]


def line_of_offset(path: Path, offset: int) -> int:
    """The 1-based line of the text holding byte ``offset`` (decompressed)."""
    lines, left = 1, offset
    with open_binary(path) as f:
        while left > 0:
            chunk = f.read(min(left, 1 << 24))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            left -= len(chunk)
    return lines


class CheckedText(io.RawIOBase):
    """The bytes ``[start, end)`` of a text file (``end`` -1: to its end; a compressed file
    is read whole), for pyarrow's CSV reader: every piece is checked to be UTF-8 before
    the parser sees it; the first bad byte raises :func:`not_utf8` naming its line."""

    def __init__(self, path: Path, start: int = 0, end: int = -1):
        self.path = path
        self._f: Any = open_binary(path)
        if start:
            self._f.seek(start)
        self._pos = start  # offset of the next byte read
        self._left = -1 if end < 0 else end - start
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        want = size if self._left < 0 or 0 <= size <= self._left else self._left
        try:
            data = self._f.read(want) if want != 0 else b""
        except OSError as exc:  # a damaged archive
            raise DataError(f"{self.path}: cannot read the input ({exc.strerror or exc})") \
                from exc
        if self._left >= 0:
            self._left -= len(data)
        pending = self._decoder.getstate()[0]
        if not (data.isascii() and not pending) or not data:
            try:
                self._decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                offset = self._pos - len(pending) + exc.start
                byte = (pending + data)[exc.start]
                raise not_utf8(self.path, line_of_offset(self.path, offset), byte,
                               offset) from None
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


@dataclass(frozen=True)
class TextRange:
    """Bytes ``[start, end)`` of a text file (``end`` -1: to the end), starting at a line
    boundary after ``lines_before`` physical lines."""

    start: int
    end: int
    lines_before: int


def split_ranges(path: Path, parts: int, header: int) -> list[TextRange]:
    """Cut a text file into about ``parts`` byte ranges at line boundaries (the first one
    keeps the header), with the number of physical lines before each."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        for k in range(1, parts):
            f.seek(max(size * k // parts, cuts[-1]))
            f.readline()
            if f.tell() > cuts[-1] and f.tell() < size:
                cuts.append(f.tell())
        cuts.append(size)
        ranges, lines = [], 0
        f.seek(0)
        for a, b in zip(cuts[:-1], cuts[1:]):
            ranges.append(TextRange(a, b, lines))
            left = b - a
            while left:
                chunk = f.read(min(left, 1 << 24))
                lines += chunk.count(b"\n")
                left -= len(chunk)
    return ranges
