"""CSV input/output of ``shaver predict`` (torch-free)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from shaver.errors import DataError
from shaver.fileio import write_text_atomic


def _open_rows(path: Path) -> Iterator[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            yield from csv.reader(handle)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a UTF-8 CSV file ({exc})") from exc


def read_raw_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """A CSV with a header of raw column names -> one dict per row (empty cell = missing)."""
    path = Path(path)
    lines = _open_rows(path)
    header = next(lines, None)
    if not header:
        raise DataError(f"{path}: empty file (expected a header with the raw field names)")
    rows = []
    for number, cells in enumerate(lines, start=2):
        if len(cells) != len(header):
            raise DataError(f"{path}, line {number}: {len(cells)} cells, the header has "
                            f"{len(header)}")
        rows.append({k: v for k, v in zip(header, cells) if v != ""})
    return rows


def read_id_rows(path: str | os.PathLike[str], fields: int) -> np.ndarray:
    """A CSV of global ids, ``fields`` per line (an optional non-numeric header is skipped)."""
    path = Path(path)
    out: list[list[int]] = []
    for number, cells in enumerate(_open_rows(path), start=1):
        if number == 1 and cells and not cells[0].strip().lstrip("-").isdigit():
            continue
        if len(cells) != fields:
            raise DataError(f"{path}, line {number}: {len(cells)} ids, expected {fields}")
        try:
            out.append([int(c) for c in cells])
        except ValueError:
            raise DataError(f"{path}, line {number}: ids must be integers, got {cells}") from None
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
