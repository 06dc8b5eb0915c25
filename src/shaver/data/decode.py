"""One block of raw rows -> labels, split ids and coded field tokens, bad rows removed.

Both passes of :mod:`shaver.data.prepare` decode blocks with this code, so they see the
same rows. A value a transform rejects is an error naming file, line and field, or with
``skip_bad_lines`` drops its rows (counted)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shaver.data.hashing import line_uniforms
from shaver.data.joins import SideTable
from shaver.data.lists import ListColumn, parse_lists
from shaver.data.readers import BadLines, Block
from shaver.data.spec import DatasetSpec, FieldSpec
from shaver.data.tokens import (
    MISSING,
    BadValue,
    Coded,
    criteo_codes,
    distinct_texts,
    field_tokens,
    label_values,
    log2_codes,
    numeric_sample,
    split_by_value,
)
from shaver.errors import DataError

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass
class Decoded:
    """``labels`` float32 (rows,), ``split`` int8 (rows,) 0/1/2, ``lines`` int64 (rows,),
    ``fields``: per field a :class:`Coded` (its tokens; for quantile fields the raw text),
    or for a list field a :class:`~shaver.data.lists.ListColumn` (its rows' values)."""

    labels: np.ndarray
    split: np.ndarray
    lines: np.ndarray
    fields: list[Coded | ListColumn]


@dataclass
class BlockContext:
    spec: DatasetSpec
    path: Path
    header_lines: int
    skip_bad_lines: bool
    bad: BadLines
    tables: dict[str, SideTable]
    fixed_split: int | None
    seed: int
    file_index: int


def _checked(ctx: BlockContext, block: Block, coded: Coded, what: str, fn: Callable,
             bad_rows: np.ndarray, placeholder: str = MISSING, arrow_first: bool = False):
    """``fn(coded.values)``; on a :class:`BadValue` raise, or mark its rows bad and retry.
    With ``arrow_first``, ``fn`` is tried on the values as a pyarrow array first."""
    if arrow_first:
        try:
            return fn(coded.strings())
        except BadValue:
            pass  # found again below, on the list
    values = list(coded.values)
    while True:
        try:
            return fn(values)
        except BadValue as exc:
            rows = np.flatnonzero(coded.codes == exc.index)
            line = int(block.lines[rows[0]]) + ctx.header_lines + 1
            if not ctx.skip_bad_lines:
                raise DataError(f"{ctx.path}:{line}: {what}: {exc.message}") from None
            bad_rows[rows] = True
            for r in rows[:3]:
                ctx.bad.note(ctx.path, int(block.lines[r]) + ctx.header_lines + 1,
                             f"{what}: {exc.message}")
            values[exc.index] = placeholder


def _field_coded(ctx: BlockContext, block: Block, f: FieldSpec, joined: dict,
                 bad_rows: np.ndarray) -> Coded | ListColumn:
    if f.source:
        raw = ctx.tables[f.source].column(f.column, joined[f.source])
    else:
        raw = block.coded(f.column)
    if f.is_list:  # each distinct text parsed once; a bad one names its first row
        lists = _checked(ctx, block, raw, f"field {f.name!r}", lambda v: parse_lists(f, v),
                         bad_rows, arrow_first=True)
        return ListColumn(lists, raw.codes)
    if f.kind == "categorical" and f.derive is None:  # the tokens are the texts themselves
        return raw
    if f.kind == "numeric" and f.discretiser == "quantile":  # binned once counts are known
        accepted: list[list[str]] = []  # the texts last tried (skipped bad ones made missing)

        def sample(values: list[str]) -> np.ndarray:
            accepted.append(values)
            return numeric_sample(values)

        _checked(ctx, block, raw, f"field {f.name!r}", sample, bad_rows)
        return raw if not bad_rows.any() else Coded(accepted[-1], raw.codes)
    if f.kind == "numeric" and f.derive is None:  # token codes, each text formatted once
        criteo = f.discretiser == "criteo"
        codes = _checked(ctx, block, raw, f"field {f.name!r}",
                         criteo_codes if criteo else log2_codes, bad_rows, arrow_first=criteo)
        texts, inverse = distinct_texts(codes)
        return Coded(texts, inverse[raw.codes], distinct=True)
    tokens = _checked(ctx, block, raw, f"field {f.name!r}",
                      lambda v: field_tokens(f, v), bad_rows)
    return Coded(tokens, raw.codes)


def decode_block(ctx: BlockContext, block: Block) -> Decoded:
    """Decode one block (see the module docstring)."""
    spec = ctx.spec
    n = len(block)
    draws = None
    if ctx.fixed_split is None and spec.split.method == "random":
        draws = line_uniforms(ctx.seed, ctx.file_index, block.lines)
    bad_rows = np.zeros(n, dtype=bool)
    label_coded = block.coded(spec.label.column)
    per_value = _checked(ctx, block, label_coded, f"column {spec.label.column!r}",
                         lambda v: label_values(spec.label, v), bad_rows, placeholder="0")
    labels = per_value[label_coded.codes]
    split = _split_ids(ctx, block, draws)
    joined = {name: t.lookup(block.coded(t.join.key)) for name, t in ctx.tables.items()}
    fields = [_field_coded(ctx, block, f, joined, bad_rows) for f in spec.fields]
    lines = block.lines
    if bad_rows.any():
        ctx.bad.count += int(bad_rows.sum())
        keep = np.flatnonzero(~bad_rows)
        labels, split, lines = labels[keep], split[keep], lines[keep]
        fields = [c.take(keep) for c in fields]
    return Decoded(labels, split, lines, fields)


def _split_ids(ctx: BlockContext, block: Block, draws: np.ndarray | None) -> np.ndarray:
    s = ctx.spec.split
    n = len(block)
    if ctx.fixed_split is not None:
        return np.full(n, ctx.fixed_split, dtype=np.int8)
    if draws is not None:
        edges = np.cumsum(s.fractions)[:2]
        return np.searchsorted(edges, draws, side="right").astype(np.int8)
    coded = block.coded(s.column)
    return split_by_value(coded.values, s.val_from, s.test_from)[coded.codes]
