"""Encode raw rows with a prepared dataset's feature map (torch-free; used at deployment).

A :class:`RowEncoder` holds the spec and vocabularies of a prepared dataset (its meta.json
and vocab.json, or the same two dicts carried inside a deployment artifact) and turns raw
rows (mappings from the spec's column names to text) into global ids exactly as
preparation did: same discretisers and derived fields; unseen values, and values the
training data saw too rarely, map to their field's OOV id. A row must carry every column
the fields read (an empty string or None is a missing value): a misnamed column must not
quietly turn into a confident score. ``allow_missing=True`` reads absent columns as
missing values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shaver.data.spec import DatasetSpec
from shaver.data.tokens import MISSING, BadValue, field_tokens
from shaver.data.vocab import lookup_table
from shaver.errors import DataError


class RowValueError(DataError):
    """A value :meth:`RowEncoder.encode` cannot read: ``row`` (0-based, in the rows given)
    and ``detail`` (the field, the value and what was expected), so that a caller reading a
    file can name the line instead."""

    def __init__(self, row: int, detail: str):
        super().__init__(f"row {row}: {detail}")
        self.row, self.detail = row, detail


class RowEncoder:
    """Raw rows -> int64 (batch, fields) global ids.

    Build it with :meth:`from_dataset` (a prepared directory or :class:`PreparedDataset`)
    or :meth:`from_meta` (plain dicts). Rows are keyed by the spec's raw column names
    (for joined fields, the side table's column name): :attr:`columns`.
    """

    def __init__(self, spec: DatasetSpec, vocabularies: Mapping[str, Sequence[str]],
                 quantile_edges: Mapping[str, Sequence[float]] | None = None):
        self.spec = spec
        missing = [f.name for f in spec.fields if f.name not in vocabularies]
        if missing:
            raise DataError(f"vocabulary of field {missing[0]!r} is missing")
        self.field_names = spec.field_names
        #: The raw columns the fields read, in field order (each once).
        self.columns = list(dict.fromkeys(f.column for f in spec.fields))
        self.field_dims = [len(vocabularies[f]) for f in self.field_names]
        self.offsets = np.concatenate([[0], np.cumsum(self.field_dims)[:-1]]).astype(np.int64)
        self._tables = [lookup_table(list(vocabularies[f])) for f in self.field_names]
        self._edges = {k: np.asarray(v, dtype=np.float64) for k, v in (quantile_edges or {}).items()}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], vocab: Mapping[str, Sequence[str]]) -> RowEncoder:
        """From a prepared dataset's meta.json and vocab.json contents (plain dicts)."""
        if "spec" not in meta or not meta["spec"]:
            raise DataError("meta has no dataset spec: cannot encode raw rows")
        spec = DatasetSpec.from_dict(dict(meta["spec"]))
        return cls(spec, vocab, meta.get("quantile_edges"))

    @classmethod
    def from_dataset(cls, dataset: Any) -> RowEncoder:
        """From a prepared directory (path) or an open :class:`PreparedDataset`."""
        if isinstance(dataset, str | os.PathLike):
            path = Path(dataset)
            try:
                meta = json.loads((path / "meta.json").read_text())
                vocab = json.loads((path / "vocab.json").read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise DataError(f"{path}: cannot read meta.json/vocab.json ({exc})") from exc
            return cls.from_meta(meta, vocab)
        return cls.from_meta(dataset.meta, dataset.vocabularies)

    def missing_columns(self, names: Sequence[str]) -> list[str]:
        """The :attr:`columns` that ``names`` (a header, a row's keys) lacks."""
        present = set(names)
        return [c for c in self.columns if c not in present]

    def encode(self, rows: Sequence[Mapping[str, str]], *,
               allow_missing: bool = False) -> np.ndarray:
        """int64 (batch, fields) global ids of raw ``rows``. A row without one of
        :attr:`columns` is an error naming the row and the columns, unless
        ``allow_missing`` (then the absent values are missing)."""
        if not allow_missing:
            self._check_rows(rows)
        out = np.empty((len(rows), len(self.field_names)), dtype=np.int64)
        for j, (f, table) in enumerate(zip(self.spec.fields, self._tables)):
            texts = [_text(row.get(f.column, MISSING)) for row in rows]
            distinct = list(dict.fromkeys(texts))
            try:
                tokens = field_tokens(f, distinct, self._edges.get(f.name))
            except BadValue as exc:
                row = texts.index(distinct[exc.index])
                raise RowValueError(row, f"field {f.name!r}: {exc.message}") from None
            local = {v: table.get(t, 0) for v, t in zip(distinct, tokens)}
            out[:, j] = np.fromiter((local[t] for t in texts), dtype=np.int64, count=len(texts))
            out[:, j] += self.offsets[j]
        return out

    def _check_rows(self, rows: Sequence[Mapping[str, str]]) -> None:
        for i, row in enumerate(rows):
            if not all(c in row for c in self.columns):
                missing = self.missing_columns(list(row))
                raise DataError(
                    f"row {i} has no column {', '.join(missing)} (expected columns: "
                    f"{', '.join(self.columns)}); give a missing value as '' or None, or pass "
                    "allow_missing=True")

    def __repr__(self) -> str:
        return f"RowEncoder({self.spec.name!r}, fields={len(self.field_names)})"


def _text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
