"""Encode raw rows with a prepared dataset's feature map (torch-free; used at deployment).

A :class:`RowEncoder` holds the spec and vocabularies of a prepared dataset (its meta.json
and vocab.json, or the same two dicts carried inside a deployment artifact) and turns raw
rows (mappings from the spec's column names to text) into global ids exactly as
preparation did: same discretisers and derived fields; unseen values, and values the
training data saw too rarely, map to their field's OOV id. A row must carry every column
the fields read (an empty string or None is a missing value): a misnamed column must not
quietly turn into a confident score. ``allow_missing=True`` reads absent columns as
missing values.

Rows come out as SLOTS (:mod:`shaver.layout`): a list field's column holds its list's text
(values joined by the field's separator, ``value:weight`` when weighted; or a Python list of
such strings), read as preparation read it (:func:`~shaver.data.lists.parse_lists`: empty
values dropped, cut to ``max_len`` at the kept end, unseen values OOV) and padded with -1
to ``max_len`` slots. Without list fields a row's slots are its fields' ids.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shaver.data.lists import ListColumn, parse_lists
from shaver.data.spec import DatasetSpec, FieldSpec
from shaver.data.tokens import MISSING, BadValue, field_tokens
from shaver.data.vocab import lookup_table
from shaver.errors import DataError
from shaver.layout import FieldLayout, pad_bags


class RowValueError(DataError):
    """A value :meth:`RowEncoder.encode` cannot read: ``row`` (0-based, in the rows given)
    and ``detail`` (the field, the value and what was expected), so that a caller reading a
    file can name the line instead."""

    def __init__(self, row: int, detail: str):
        super().__init__(f"row {row}: {detail}")
        self.row, self.detail = row, detail


class RowEncoder:
    """Raw rows -> int64 (batch, slots) global ids (:attr:`layout`; slots = fields when no
    field is a list) and, with a weighted list field, float32 (batch, slots) weights.

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
        self._layout = spec.layout

    @property
    def layout(self) -> FieldLayout:
        """Where each field sits in the encoded rows (list fields are bags)."""
        return self._layout

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], vocab: Mapping[str, Sequence[str]]) -> RowEncoder:
        """From a prepared dataset's meta.json and vocab.json contents (plain dicts)."""
        if "spec" not in meta or not meta["spec"]:
            raise DataError("meta has no dataset spec: cannot encode raw rows")
        spec = DatasetSpec.from_dict(dict(meta["spec"]))
        stored = FieldLayout.from_json(len(spec.fields), meta.get("layout"))
        if stored != spec.layout:
            raise DataError(f"meta's layout ({stored.describe(spec.field_names)}) does not match "
                            f"its spec's list fields ({spec.layout.describe(spec.field_names)})")
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

    def encode(self, rows: Sequence[Mapping[str, Any]], *,
               allow_missing: bool = False) -> np.ndarray:
        """int64 (batch, slots) global ids of raw ``rows`` (list fields padded with -1; with
        no list field, (batch, fields)). A row without one of :attr:`columns` is an error
        naming the row and the columns, unless ``allow_missing`` (then the absent values
        are missing). :meth:`encode_slots` gives the weights too."""
        return self.encode_slots(rows, allow_missing=allow_missing)[0]

    def encode_slots(self, rows: Sequence[Mapping[str, Any]], *, allow_missing: bool = False
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(x int64 (batch, slots), w float32 (batch, slots) or None)``: the ids of
        :meth:`encode` and, when a list field is weighted, the weight of each slot (1 for a
        single-valued field's slot and an unweighted list's values, 0 in pads), as
        :meth:`~shaver.data.store.PreparedDataset.slots` gives a prepared dataset's rows."""
        if not allow_missing:
            self._check_rows(rows)
        layout = self._layout
        out = np.empty((len(rows), layout.num_slots), dtype=np.int64)
        w = np.ones(out.shape, dtype=np.float32) if layout.weighted else None
        for j, (f, table) in enumerate(zip(self.spec.fields, self._tables)):
            texts = [_text(row.get(f.column, MISSING), f) for row in rows]
            distinct = list(dict.fromkeys(texts))
            lo, hi = int(layout.starts[j]), int(layout.starts[j + 1])
            try:
                if f.is_list:
                    ids, weights = self._list_slots(f, j, table, texts, distinct)
                    out[:, lo:hi] = ids
                    if w is not None:
                        w[:, lo:hi] = weights if weights is not None else ids >= 0
                    continue
                tokens = field_tokens(f, distinct, self._edges.get(f.name))
            except BadValue as exc:
                row = texts.index(distinct[exc.index])
                raise RowValueError(row, f"field {f.name!r}: {exc.message}") from None
            local = {v: table.get(t, 0) for v, t in zip(distinct, tokens)}
            out[:, lo] = np.fromiter((local[t] for t in texts), dtype=np.int64, count=len(texts))
            out[:, lo] += self.offsets[j]
        return out, w

    def _list_slots(self, f: FieldSpec, j: int, table: Mapping[str, int], texts: list[str],
                    distinct: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """A list field's (ids (rows, max_len) padded, weights or None) for ``texts``."""
        index = {v: i for i, v in enumerate(distinct)}
        codes = np.fromiter((index[t] for t in texts), dtype=np.int32, count=len(texts))
        lengths, values, weights = ListColumn(parse_lists(f, distinct), codes).flat()
        local = np.array([table.get(v, 0) for v in values.values], dtype=np.int64)
        ids = local[values.codes] + self.offsets[j] if len(values.codes) else \
            np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return pad_bags(offsets, ids, f.max_len, weights)

    def _check_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for i, row in enumerate(rows):
            if not all(c in row for c in self.columns):
                missing = self.missing_columns(list(row))
                raise DataError(
                    f"row {i} has no column {', '.join(missing)} (expected columns: "
                    f"{', '.join(self.columns)}); give a missing value as '' or None, or pass "
                    "allow_missing=True")

    def __repr__(self) -> str:
        return f"RowEncoder({self.spec.name!r}, fields={len(self.field_names)})"


def _text(value: Any, f: FieldSpec | None = None) -> str:
    if value is None:
        return MISSING
    if f is not None and f.is_list and isinstance(value, list | tuple):
        return f.separator.join(_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
