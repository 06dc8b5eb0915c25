"""The shaver artifact container (format versions 1 and 2): one file, a JSON header, checksummed
sections.

Version 2 is written only when an artifact uses what version 1 cannot describe: a quantised
head (int8 / fp16, see below), a logit calibration or an embedding table with int4 / int2 values, row scales or
several precision tiers (:mod:`shaver.runtime.tiered`). A reader that knows version 1 only
refuses such a file by its version instead of misreading it; every other artifact is still
written as version 1, byte for byte.

Layout (all integers little-endian)::

    offset 0   8 bytes  magic  b"\\x89SHAVER\\n"   (a non-ASCII first byte and a newline catch
                                                   text-mode and 7-bit mangling, as in PNG)
    offset 8   uint32   format_version (1; 2 when the head is quantised, see below)
    offset 12  uint32   H = header length in bytes (a multiple of 8)
    offset 16  uint32   CRC-32 of the H header bytes
    offset 20  uint32   reserved, 0
    offset 24  H bytes  header: UTF-8 JSON (sorted keys, no spaces), right-padded with spaces
    24 + H     data     the sections, in header order; each starts at an offset (relative to
                        the data start) that is a multiple of 8; gaps are zero bytes; the file
                        ends exactly where the last section ends.

The header holds ``"sections"``: a list of ``[name, kind, dtype, shape, offset, nbytes, crc32]``
(crc32 as 8 lowercase hex digits), plus free JSON fields describing the model.

Why not safetensors: the artifact must (a) have a checksum per section, (b) have a size that can
be predicted *exactly* before writing (byte budgets binary-search on it), and (c) be read by a
runtime that needs nothing but numpy. Here the header is produced by one function used both to
write and to predict the size, so the prediction is exact by construction; every section carries
a CRC-32 and the loader validates bounds, dtypes, shapes, alignment and checksums before any
array is used. Nothing is ever unpickled.

Versions: a file is written with the LOWEST version that describes it, so a runtime that
reads only version 1 still reads every artifact it could before and refuses the rest by
version. Version 2 adds a quantised head (``"head": {"dtype": "fp16" | "int8"}`` in the
header, fp16/int8 ``head/`` sections and ``head_scale/`` sections; see
:mod:`shaver.runtime.headq`) and a logit calibration (``"calibration"`` in the header, an f32
(2,) ``calibration`` section; see :mod:`shaver.runtime.calibration`).

This module needs numpy only (``shaver.runtime`` must import without torch).
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shaver.errors import ArtifactError
from shaver.fileio import atomic_path

MAGIC = b"\x89SHAVER\n"
FORMAT_VERSION = 2  # the newest version this module writes and reads
READABLE_VERSIONS = (1, 2)
PREAMBLE = struct.Struct("<8sIIII")  # magic, version, header length, header crc, reserved
ALIGN = 8
#: Section dtypes and their numpy types. ``json`` sections are UTF-8 bytes.
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype("<f4"), "f16": np.dtype("<f2"), "i8": np.dtype("i1"),
    "u8": np.dtype("u1"), "u16": np.dtype("<u2"), "u32": np.dtype("<u4"),
    "i64": np.dtype("<i8"), "json": np.dtype("u1"),
}
#: Section kinds, as reported by ``shaver inspect``.
KINDS = ("values", "index", "scales", "codebook", "first_order", "head", "metadata")
MAX_HEADER = 64 << 20


@dataclass(frozen=True)
class SectionSpec:
    """What a section will hold: enough to lay the file out without the data."""

    name: str
    kind: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype].itemsize


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def layout(specs: Sequence[SectionSpec]) -> tuple[list[int], int]:
    """Offsets of each section (relative to the data start) and the data length."""
    offsets, pos = [], 0
    for spec in specs:
        pos = _align(pos)
        offsets.append(pos)
        pos += spec.nbytes
    return offsets, pos


def encode_header(fields: Mapping[str, Any], specs: Sequence[SectionSpec],
                  crcs: Sequence[int] | None = None, version: int = 1) -> bytes:
    """The padded header bytes; ``crcs=None`` gives a header of the same length (for sizing)."""
    offsets, _ = layout(specs)
    crcs = crcs if crcs is not None else [0] * len(specs)
    table = [[s.name, s.kind, s.dtype, list(s.shape), off, s.nbytes, f"{crc:08x}"]
             for s, off, crc in zip(specs, offsets, crcs)]
    doc = {**fields, "format": "shaver-artifact", "format_version": _check_version(version),
           "sections": table}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                     allow_nan=False).encode("ascii")
    return raw + b" " * (_align(len(raw)) - len(raw))


def _check_version(version: int) -> int:
    if version not in READABLE_VERSIONS:
        raise ArtifactError(f"cannot write format version {version} "
                            f"(known: {', '.join(map(str, READABLE_VERSIONS))})")
    return version


def container_bytes(fields: Mapping[str, Any], specs: Sequence[SectionSpec],
                    version: int = 1) -> int:
    """Exact size of the file :func:`write_container` writes for these sections."""
    return PREAMBLE.size + len(encode_header(fields, specs, version=version)) + layout(specs)[1]


def write_container(path: str | os.PathLike[str], fields: Mapping[str, Any],
                    sections: Sequence[tuple[SectionSpec, np.ndarray]], version: int = 1) -> int:
    """Write atomically (temp file + ``os.replace``); return the number of bytes written."""
    specs = [spec for spec, _ in sections]
    blobs = []
    for spec, array in sections:
        data = np.asarray(array, dtype=DTYPES[spec.dtype], order="C")
        if tuple(data.shape) != spec.shape:
            raise ArtifactError(f"section {spec.name}: shape {data.shape} != planned {spec.shape}")
        blobs.append(data.tobytes())
    header = encode_header(fields, specs, [zlib.crc32(b) for b in blobs], version)
    offsets, _ = layout(specs)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(PREAMBLE.pack(MAGIC, version, len(header), zlib.crc32(header), 0))
        out.write(header)
        pos = 0
        for off, blob in zip(offsets, blobs):
            out.write(b"\0" * (off - pos))
            out.write(blob)
            pos = off + len(blob)
    return PREAMBLE.size + len(header) + pos


@dataclass
class Container:
    """A validated artifact file: its header fields and its sections as read-only arrays."""

    path: str
    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    table: list[list[Any]]
    size: int
    version: int = FORMAT_VERSION

    def json(self, name: str) -> Any:
        """Decode a ``json`` section."""
        try:
            return json.loads(bytes(self.arrays[name]).decode("utf-8").rstrip(" "))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{self.path}: section {name} is not valid JSON ({exc})") from exc


def read_container(path: str | os.PathLike[str]) -> Container:
    """Read and fully validate a container; raise :class:`ArtifactError` on any defect.

    The preamble (magic, version, header length) is checked before the rest of the file is
    read: a file that is not a shaver artifact costs 24 bytes of reading, whatever its size.
    """
    path = str(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(PREAMBLE.size)
            _check_preamble(head, path)
            buf = head + handle.read()
    except IsADirectoryError as exc:
        raise ArtifactError(f"{path}: is a directory, not a shaver artifact") from exc
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from exc
    return parse_container(buf, path)


def _check_preamble(buf: bytes, path: str) -> tuple[int, int, int]:
    """``(version, header length, header crc)`` of a file's first bytes, checked."""
    if len(buf) < PREAMBLE.size:
        raise ArtifactError(f"{path}: truncated ({len(buf)} bytes), not a shaver artifact")
    magic, version, hlen, hcrc, reserved = PREAMBLE.unpack_from(buf)
    if magic != MAGIC:
        raise ArtifactError(f"{path}: not a shaver artifact (bad magic bytes)")
    if version not in READABLE_VERSIONS:
        raise ArtifactError(f"{path}: format version {version} is not supported "
                            f"(this shaver reads versions "
                            f"{', '.join(map(str, READABLE_VERSIONS))})")
    if reserved != 0 or hlen % ALIGN or hlen > MAX_HEADER:
        raise ArtifactError(f"{path}: corrupt preamble")
    return version, hlen, hcrc


def parse_container(buf: bytes, path: str = "<bytes>") -> Container:
    """Validate ``buf`` (a whole artifact file) and view its sections."""
    version, hlen, hcrc = _check_preamble(buf, path)
    if PREAMBLE.size + hlen > len(buf):
        raise ArtifactError(f"{path}: truncated inside the header")
    raw = buf[PREAMBLE.size:PREAMBLE.size + hlen]
    if zlib.crc32(raw) != hcrc:
        raise ArtifactError(f"{path}: header checksum mismatch (file corrupted)")
    header = _decode_header(raw, path, version)
    table = header["sections"]
    arrays = _read_sections(buf, PREAMBLE.size + hlen, table, path)
    return Container(path, header, arrays, table, len(buf), version)


def _decode_header(raw: bytes, path: str, version: int) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != "shaver-artifact" \
            or header.get("format_version") != version:
        raise ArtifactError(f"{path}: header does not describe a shaver artifact v{version}")
    if not isinstance(header.get("sections"), list):
        raise ArtifactError(f"{path}: header has no section table")
    return header


def _check_entry(entry: Any, path: str) -> tuple[str, str, str, tuple[int, ...], int, int, int]:
    ok = (isinstance(entry, list) and len(entry) == 7
          and all(isinstance(entry[i], str) for i in (0, 1, 2, 6))
          and entry[1] in KINDS and entry[2] in DTYPES and isinstance(entry[3], list)
          and all(type(v) is int and v >= 0 for v in entry[3])
          and all(type(v) is int and v >= 0 for v in entry[4:6])
          and isinstance(entry[6], str) and len(entry[6]) == 8)
    if not ok:
        raise ArtifactError(f"{path}: malformed section entry {str(entry)[:80]}")
    try:
        crc = int(entry[6], 16)
    except ValueError as exc:
        raise ArtifactError(f"{path}: malformed checksum in section {entry[0]}") from exc
    return entry[0], entry[1], entry[2], tuple(entry[3]), entry[4], entry[5], crc


def _read_sections(buf: bytes, start: int, table: list[Any], path: str) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    pos = 0
    view = memoryview(buf)
    for entry in table:
        name, _kind, dtype, shape, off, nbytes, crc = _check_entry(entry, path)
        count = math.prod(shape) if len(shape) < 8 else -1  # Python ints: no overflow
        if name in arrays or off != _align(pos) or count < 0 \
                or count * DTYPES[dtype].itemsize != nbytes:
            raise ArtifactError(f"{path}: section {name} has an inconsistent position or shape")
        if start + off + nbytes > len(buf):
            raise ArtifactError(f"{path}: truncated inside section {name}")
        blob = view[start + off:start + off + nbytes]
        if zlib.crc32(blob) != crc:
            raise ArtifactError(f"{path}: checksum mismatch in section {name} (file corrupted)")
        arrays[name] = np.frombuffer(blob, dtype=DTYPES[dtype]).reshape(shape)
        pos = off + nbytes
    if start + pos != len(buf):
        raise ArtifactError(f"{path}: {len(buf) - start - pos} unexpected trailing bytes")
    return arrays
