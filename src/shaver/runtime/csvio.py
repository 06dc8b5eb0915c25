"""Text input/output of ``shaver predict`` (numpy only: no torch, no pyarrow for plain text).

Raw rows are read in the format the model's data was prepared from (:func:`data_format`:
the feature map's delimiter, quoting, header and columns; Criteo: tab-separated, no
header) or as a CSV with a header of raw column names (:data:`CSV_WITH_HEADER`).
Compressed input (``.gz`` ...) is decompressed as preparation does (with pyarrow)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shaver.errors import DataError, clipped, shown
from shaver.fileio import write_text_atomic


@dataclass(frozen=True)
class RowFormat:
    """How a text file lays out raw rows: ``kind`` (CSV, TSV, libFM: for messages), the
    ``delimiter``, ``quoted`` (CSV double quotes; off for TSV, as preparation reads it), and
    ``header``: True (the first line names the columns), False (none: ``columns`` name them)
    or ``"skip"`` (a first line to ignore). Without a header, a file may leave out the first
    ``optional`` columns (those no field reads, such as the label): Criteo's test file has
    no label column, its train file has one; the first row's width says which."""

    kind: str = "CSV"
    delimiter: str = ","
    quoted: bool = True
    header: bool | str = True
    columns: tuple[str, ...] = ()
    optional: int = 0

    def widths(self) -> dict[int, tuple[str, ...]]:
        """Values in a row without a header -> the columns they are."""
        return {len(self.columns) - k: self.columns[k:] for k in range(self.optional + 1)}


#: CSV with a header of raw column names (``shaver predict --input-format csv``).
CSV_WITH_HEADER = RowFormat()
KINDS = {"csv": "CSV", "tsv": "TSV", "libfm": "libFM"}


def data_format(inp: Any, reads: Sequence[str], where: str | os.PathLike[str]) -> RowFormat:
    """The :class:`RowFormat` of the files a model's data was prepared from. ``inp``: the
    feature map's :class:`~shaver.data.spec.InputSpec`; ``reads``: the raw columns its
    fields read; ``where``: the artifact (for the message when there is no text format)."""
    if inp.format not in KINDS:
        raise DataError(f"{where}: the model's data was prepared from {inp.format} files, "
                        "which shaver predict does not read; pass --input-format csv and a "
                        "CSV with a header of the raw column names")
    columns = tuple(inp.columns) if inp.header is not True else ()
    unread = next((i for i, c in enumerate(columns) if c in reads), max(len(columns) - 1, 0))
    return RowFormat(kind=KINDS[inp.format], delimiter=inp.sep, quoted=inp.format == "csv",
                     header=inp.header, columns=columns, optional=unread)


def _open_rows(path: Path, fmt: RowFormat) -> Iterator[tuple[int, list[str]]]:
    """``(line number, cells)`` of each record (UTF-8; a byte-order mark is dropped)."""
    from shaver.data.textin import CheckedText, check_head, open_binary

    quoting = csv.QUOTE_MINIMAL if fmt.quoted else csv.QUOTE_NONE
    try:
        check_head(path)  # UTF-16, binary data, other encodings: one clear line
        with io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=fmt.delimiter, quoting=quoting)
            for cells in reader:
                yield reader.line_num, cells
    except OSError as exc:  # a damaged archive, past the first 64 KiB
        raise DataError(f"{path}: cannot read the input ({exc.strerror or exc})") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: not a {fmt.kind} file ({exc})") from exc
    except UnicodeDecodeError:  # past the first 64 KiB: find the byte and its line
        with CheckedText(path) as stream:
            while stream.read(1 << 20):
                pass
        raise  # pragma: no cover - CheckedText raised on the same byte


@dataclass
class RawRows:
    """Rows read from a file: ``rows`` (one dict per row) and ``lines`` (the line number of
    each, 1-based, for messages about a row's values)."""

    rows: list[dict[str, str]]
    lines: list[int]


def read_raw_rows(path: str | os.PathLike[str], columns: Sequence[str] | None = None, *,
                  allow_missing: bool = False,
                  fmt: RowFormat = CSV_WITH_HEADER) -> list[dict[str, str]]:
    """Raw rows in the format ``fmt`` (by default a CSV with a header of raw column names)
    -> one dict per row, keyed by the header's or ``fmt``'s columns (an empty cell is a
    missing value). With ``columns`` (those the model reads), a file that lacks one is an
    error naming the missing and the expected columns, unless ``allow_missing``. A row
    with another number of values is an error naming its line."""
    return read_raw_file(path, columns, allow_missing=allow_missing, fmt=fmt).rows


def read_raw_file(path: str | os.PathLike[str], columns: Sequence[str] | None = None, *,
                  allow_missing: bool = False, fmt: RowFormat = CSV_WITH_HEADER) -> RawRows:
    """:func:`read_raw_rows` with the line number of every row."""
    path = Path(path)
    lines = _open_rows(path, fmt)
    if fmt.header is not True:
        return _rows_without_header(path, lines, fmt, columns or (), allow_missing)
    _, header = next(lines, (0, None))
    if not header:
        raise DataError(f"{path}: empty file (expected a header with the raw column names)")
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise DataError(f"{path}:1: column {shown(twice[0])} appears twice in the header")
    missing = [c for c in columns or () if c not in header]
    if missing and not allow_missing:
        raise DataError(f"{path}:1: the header has no column {clipped(', '.join(missing))} "
                        f"(expected columns: {clipped(', '.join(columns or ()))}; the header "
                        f"has: {clipped(', '.join(header))}); --allow-missing reads them as "
                        f"missing values")
    out = RawRows([], [])
    for number, cells in lines:
        if len(cells) != len(header):
            raise DataError(f"{path}:{number}: {len(cells)} values, the header has "
                            f"{len(header)}")
        out.rows.append(dict(zip(header, cells)))
        out.lines.append(number)
    return out


def _rows_without_header(path: Path, lines: Iterator[tuple[int, list[str]]], fmt: RowFormat,
                         columns: Sequence[str], allow_missing: bool) -> RawRows:
    """Rows of a file whose columns ``fmt`` names; the first row's width fixes which."""
    missing = [c for c in columns if c not in fmt.columns]
    if missing and not allow_missing:
        raise DataError(f"{path}: {fmt.kind} rows without a header have no column "
                        f"{', '.join(missing)} (the model reads them from a joined table); "
                        "--input-format csv reads a header that names them, --allow-missing "
                        "reads them as missing values")
    widths = fmt.widths()
    if fmt.header == "skip" and next(lines, None) is None:
        raise DataError(f"{path}: empty file (expected a first line to skip, then {fmt.kind} "
                        "rows)")
    out = RawRows([], [])
    names: tuple[str, ...] | None = None
    for number, cells in lines:
        if names is None:
            names = widths.get(len(cells))
            if names is None:
                expected = " or ".join(f"{n} ({cols[0]} to {cols[-1]})"
                                       for n, cols in widths.items())
                raise DataError(f"{path}:{number}: {len(cells)} values, expected {expected}")
        elif len(cells) != len(names):
            raise DataError(f"{path}:{number}: {len(cells)} values, the first row has "
                            f"{len(names)}")
        out.rows.append(dict(zip(names, cells)))
        out.lines.append(number)
    if names is None and fmt.header is False:
        raise DataError(f"{path}: empty file (expected {fmt.kind} rows without a header)")
    return out


def read_id_rows(path: str | os.PathLike[str], fields: int) -> np.ndarray:
    """A CSV of global ids, ``fields`` per line (an optional non-numeric header is skipped)."""
    path = Path(path)
    out: list[list[int]] = []
    for number, cells in _open_rows(path, CSV_WITH_HEADER):
        if number == 1 and cells and not cells[0].strip().lstrip("-").isdigit():
            continue
        if len(cells) != fields:
            raise DataError(f"{path}:{number}: {len(cells)} ids, expected {fields}")
        try:
            out.append([int(c) for c in cells])
        except ValueError:
            raise DataError(f"{path}:{number}: ids must be integers, got {shown(cells)}") \
                from None
    return np.array(out, dtype=np.int64).reshape(-1, fields)


def write_scores(path: str | os.PathLike[str] | None, scores: Sequence[float]) -> str:
    """CSV text with a ``probability`` column; written atomically to ``path`` if given."""
    text = "probability\n" + "".join(f"{float(s):.8g}\n" for s in scores)
    if path is not None:
        path = Path(path)
        try:
            write_text_atomic(path, text)
        except OSError as exc:
            raise DataError(f"{path}: cannot write ({exc.strerror})") from exc
    return text
