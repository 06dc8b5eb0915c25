"""CSV input/output of ``shaver predict`` (torch-free)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from shaver.errors import DataError, clipped, shown
from shaver.fileio import write_text_atomic


def _open_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, cells)`` of each CSV record (UTF-8; a byte-order mark is dropped)."""
    from shaver.data.textin import CheckedText, check_head, open_binary

    try:
        check_head(path)  # UTF-16, binary data, other encodings: one clear line
        with io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            for cells in reader:
                yield reader.line_num, cells
    except OSError as exc:  # a damaged archive, past the first 64 KiB
        raise DataError(f"{path}: cannot read the input ({exc.strerror or exc})") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: not a CSV file ({exc})") from exc
    except UnicodeDecodeError:  # past the first 64 KiB: find the byte and its line
        with CheckedText(path) as stream:
            while stream.read(1 << 20):
                pass
        raise  # pragma: no cover - CheckedText raised on the same byte


def read_raw_rows(path: str | os.PathLike[str], columns: Sequence[str] | None = None, *,
                  allow_missing: bool = False) -> list[dict[str, str]]:
    """A CSV with a header of raw column names -> one dict per row (every header column;
    an empty cell is a missing value). With ``columns`` (those the model reads), a header
    that lacks one is an error naming the missing and the expected columns, unless
    ``allow_missing``. A row with fewer or more values than the header is an error naming
    its line."""
    path = Path(path)
    lines = _open_rows(path)
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
    rows = []
    for number, cells in lines:
        if len(cells) != len(header):
            raise DataError(f"{path}:{number}: {len(cells)} values, the header has "
                            f"{len(header)}")
        rows.append(dict(zip(header, cells)))
    return rows


def read_id_rows(path: str | os.PathLike[str], fields: int) -> np.ndarray:
    """A CSV of global ids, ``fields`` per line (an optional non-numeric header is skipped)."""
    path = Path(path)
    out: list[list[int]] = []
    for number, cells in _open_rows(path):
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
