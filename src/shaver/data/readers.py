"""Streaming readers: raw files -> blocks of text columns (pyarrow arrays of strings).

Every value is read as text (empty = missing). Text files are parsed by pyarrow's CSV
reader in blocks, so nothing holds the whole file: as bytes, in pieces of at most 1 MiB
(faster to parse than larger ones), a few of which make one block. :func:`coded_blocks`
dictionary-encodes each needed column of a block and checks its distinct values to be
UTF-8; :func:`~shaver.data.stages.prefetched` runs such stages in background threads.
pyarrow is imported lazily; without it preparation stops with a clear message.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shaver.data.spec import InputSpec
from shaver.data.textin import (
    CheckedText,
    TextRange,
    check_head,
    header_line,
    open_binary,
)
from shaver.data.tokens import code_column
from shaver.errors import DataError, clipped, shown

log = logging.getLogger(__name__)
BLOCK_BYTES = 1 << 22  # 4 MiB of text a block: larger blocks only grow memory
PARSE_BYTES = 1 << 20  # pyarrow parses a block in pieces of this size (cache-friendly)


def arrow() -> Any:
    """``(pyarrow, pyarrow.compute, pyarrow.csv)``, or a clear error when pyarrow is missing."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
    except ImportError as exc:  # pragma: no cover - pyarrow is installed in the test env
        raise DataError(
            "preparing data needs pyarrow: pip install 'shaver-rec[parquet]' (or pyarrow)"
        ) from exc
    return pa, pc, pcsv


@dataclass
class BadLines:
    """Lines skipped with ``--skip-bad-lines``: how many, and the first few (1-based)."""

    count: int = 0
    first: list[str] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)

    def add(self, path: Path, line: int | None, why: str) -> None:
        """Count a skipped line (its number is kept to trace kept rows to raw lines)."""
        self.count += 1
        if line is not None:
            self.line_numbers.append(line)
        self.note(path, line, why)

    def note(self, path: Path, line: int | None, why: str) -> None:
        """Keep an example (the first 20) without counting it."""
        if len(self.first) < 20:
            self.first.append(f"{path}:{line if line is not None else '?'}: {why}")


@dataclass
class Block:
    """``columns``: name -> pyarrow string or binary array or chunked array (rows,) (binary
    from text files: UTF-8 is checked when coded); ``lines``: int64 (rows,) 0-based
    data-line number of each row in its file (header excluded)."""

    columns: dict[str, Any]
    lines: np.ndarray
    _coded: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lines)

    def coded(self, name: str) -> Any:
        """Column ``name`` as a :class:`~shaver.data.tokens.Coded` (encoded once)."""
        if name not in self._coded:
            self._coded[name] = code_column(self.columns[name])
        return self._coded[name]


def header_lines(inp: InputSpec) -> int:
    return 0 if inp.header is False or inp.format == "parquet" else 1


def _check_readable(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            first = f.read(1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the input ({exc.strerror or exc})") from exc
    if not first:
        raise DataError(f"{path}: empty file (expected data rows)")


def _short(exc: Exception, limit: int = 200) -> str:
    """An error's text, cut to ``limit`` characters (parse errors quote whole rows)."""
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + " ..."


def text_columns(path: Path, inp: InputSpec) -> list[str]:
    """Column names of a text file: the spec's, checked against the header when there is one."""
    if inp.header is not True:
        return list(inp.columns)
    names = header_line(path, inp.sep)
    if inp.columns and names != list(inp.columns):
        raise DataError(
            f"{path}:1: header has columns {names[:8]}{'...' if len(names) > 8 else ''} "
            f"({len(names)}), expected {list(inp.columns)[:8]}... ({len(inp.columns)})"
        )
    return names


def header_columns(path: Path, inp: InputSpec) -> list[str] | None:
    """The column names a file's header line (or Parquet schema) gives; None when the spec
    names the columns (no header)."""
    if inp.format != "parquet" and inp.header is not True:
        return None
    _check_readable(path)
    if inp.format == "parquet":
        return list(_parquet_file(path).schema_arrow.names)
    check_head(path)
    return text_columns(path, inp)


def read_blocks(
    path: str | Path,
    inp: InputSpec,
    needed: Sequence[str],
    *,
    skip_bad_lines: bool = False,
    bad: BadLines | None = None,
    block_bytes: int = BLOCK_BYTES,
    part: TextRange | None = None,
) -> Iterator[Block]:
    """Yield blocks of the ``needed`` columns (as text) of one raw file, or of the byte
    range ``part`` of a text file (see :func:`split_ranges`)."""
    path = Path(path)
    _check_readable(path)
    if inp.format != "parquet":
        check_head(path)
    if inp.format == "parquet":
        yield from _parquet_blocks(path, needed)
    else:
        yield from _text_blocks(path, inp, needed, skip_bad_lines, bad or BadLines(), block_bytes,
                                part or TextRange(0, -1, 0))


def _text_blocks(path: Path, inp: InputSpec, needed: Sequence[str], skip: bool,
                 bad: BadLines, block_bytes: int, part: TextRange) -> Iterator[Block]:
    pa, pc, pcsv = arrow()
    names = text_columns(path, inp)
    missing = [c for c in needed if c not in names]
    if missing:
        raise DataError(f"{path}: no column {shown(missing[0])} (columns: "
                        f"{clipped(', '.join(names))})")
    n_head = header_lines(inp) if part.start == 0 else 0
    first_data_line = part.lines_before - (header_lines(inp) if part.start else 0)
    state: dict[str, Any] = {}
    skipped_before = len(bad.line_numbers)

    def on_invalid(row: Any) -> str:
        why = f"found {row.actual_columns} columns, expected {row.expected_columns}"
        number = None if row.number is None else row.number + part.lines_before
        if skip:
            bad.add(path, number, why)
            return "skip"
        state["error"] = (number, why, row.text)
        return "error"

    reader_opts = pcsv.ReadOptions(column_names=names, skip_rows=n_head, use_threads=False,
                                   block_size=min(block_bytes, PARSE_BYTES))
    parse_opts = pcsv.ParseOptions(delimiter=inp.sep,
                                   quote_char='"' if inp.format == "csv" else False,
                                   ignore_empty_lines=False, invalid_row_handler=on_invalid)
    convert_opts = pcsv.ConvertOptions(column_types={c: pa.binary() for c in needed},
                                       include_columns=list(needed), strings_can_be_null=False)
    kept = 0
    group = max(1, block_bytes // PARSE_BYTES)
    source = CheckedText(path, part.start, part.end)  # UTF-8 checked before parsing
    try:
        reader = pcsv.open_csv(source, read_options=reader_opts, parse_options=parse_opts,
                               convert_options=convert_opts)
        for batch in _grouped(reader, group):
            n = sum(b.num_rows for b in batch)
            lines = np.arange(kept, kept + n, dtype=np.int64)
            if skip and len(bad.line_numbers) > skipped_before:
                offset = part.lines_before + n_head
                lines = _shift_past_skipped(lines, bad.line_numbers[skipped_before:], offset)
            kept += n
            yield Block({c: pa.chunked_array([b.column(c) for b in batch], pa.binary())
                         for c in needed}, lines + first_data_line)
    except pa.ArrowInvalid as exc:
        if "error" in state:
            number, why, text = state["error"]
            line = number if number is not None else _find_line(path, text)
            raise DataError(f"{path}:{line}: {why} (use --skip-bad-lines to skip such "
                            f"lines)") from None
        raise DataError(f"{path}: cannot parse ({_short(exc)})") from exc
    finally:
        source.close()


def _grouped(reader: Any, group: int) -> Iterator[list[Any]]:
    """Lists of ``group`` consecutive record batches (the last may be shorter)."""
    batch: list[Any] = []
    for b in reader:
        batch.append(b)
        if len(batch) == group:
            yield batch
            batch = []
    if batch:
        yield batch


def coded_blocks(blocks: Iterator[Block], names: Sequence[str]) -> Iterator[Block]:
    """The blocks with columns ``names`` coded (see :meth:`Block.coded`; text files are
    checked to be UTF-8 as they are read, so the cast to text cannot fail)."""
    for block in blocks:
        for name in names:
            block.coded(name)
        yield block


def _shift_past_skipped(kept: np.ndarray, skipped_1based: list[int], n_head: int) -> np.ndarray:
    """Kept-row indices -> data-line numbers, given the (1-based) lines that were skipped."""
    skipped = np.sort(np.asarray(skipped_1based, dtype=np.int64) - 1 - n_head)
    # the k-th kept line is d = k + #{j: skipped[j] - j <= k}
    shifted = skipped - np.arange(len(skipped), dtype=np.int64)
    return kept + np.searchsorted(shifted, kept, side="right")


def _find_line(path: Path, text: str) -> int | str:
    with io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace",
                          newline="") as f:
        for number, line in enumerate(f, start=1):
            if line.rstrip("\r\n") == text:
                return number
    return "?"


def _parquet_blocks(path: Path, needed: Sequence[str]) -> Iterator[Block]:
    pa, pc, _ = arrow()
    pf = _parquet_file(path)
    names = pf.schema_arrow.names
    missing = [c for c in needed if c not in names]
    if missing:
        raise DataError(f"{path}: no column {shown(missing[0])} (columns: "
                        f"{clipped(', '.join(names))})")
    start = 0
    for batch in pf.iter_batches(batch_size=1 << 20, columns=list(needed)):
        cols = {c: pc.fill_null(pc.cast(batch.column(c), pa.string()), "") for c in needed}
        n = batch.num_rows
        yield Block(cols, np.arange(start, start + n, dtype=np.int64))
        start += n


def _parquet_file(path: Path) -> Any:
    pa, _, _ = arrow()
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc


def _chunks(col: Any) -> list[Any]:
    return list(col.chunks) if hasattr(col, "chunks") else [col]


def read_table(path: Path, inp: InputSpec, needed: Sequence[str]) -> Block:
    """A whole (small) file as one block: side tables of joins."""
    blocks = list(read_blocks(path, inp, needed))
    pa, _, _ = arrow()
    cols = {c: pa.concat_arrays([ch for b in blocks for ch in _chunks(b.columns[c])]
                                ).cast(pa.string())  # UTF-8 checked as read
            if blocks else pa.array([], pa.string()) for c in needed}
    lines = np.concatenate([b.lines for b in blocks]) if blocks else np.zeros(0, np.int64)
    return Block(cols, lines)
