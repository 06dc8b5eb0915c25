"""Where a sample's fields sit in its id matrix: single-valued fields and bags (lists).

Every stage sees a sample as one row of SLOTS: a single-valued field takes one slot, a
multi-valued field (a *bag*: genres, a click history, query tokens) takes ``max_len`` slots,
filled from the left with the bag's global ids and padded with :data:`PAD` (-1). Slots are in
field order, each field's slots side by side. A batch is ``x`` int (rows, slots) and, when a
bag carries per-value weights, ``w`` float32 (rows, slots) (None: every value weighs 1).

A bag is pooled per sample (EmbeddingBag semantics), and the pooled vector is the field's
embedding. Pooling is linear in the table: the pooled vector of field f is
``sum_s coef[s] * E[x[s]]`` over f's slots, with the slot coefficients of
:meth:`FieldLayout.coefficients`:

* a single-valued field's slot: 1;
* a bag's slot holding a value with weight v (0 for a pad; 1 for every value of a bag
  that is not ``weighted``, whatever ``w`` holds there): ``sum`` pooling v; ``mean``
  pooling ``v / sum(v over the bag)`` (the weighted mean; the plain mean when unweighted;
  0 for every slot of an empty bag, whose pooled vector is 0).

The first-order weights of a model (DeepFM's) are pooled with the same coefficients. This
module is plain numpy: the data stage, the models (:mod:`shaver.models.pooling`, the torch
twin of :func:`pool`), the torch-free runtime and the exporters all read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from shaver.errors import ShaverError, shown

#: Pad id of an unused bag slot.
PAD = -1
POOLINGS = ("sum", "mean")
#: Which end of a too-long list a bag keeps.
KEEPS = ("first", "last")


@dataclass(frozen=True)
class Bag:
    """A multi-valued field: ``field`` (its index), ``max_len`` slots, ``pooling``
    ("sum" | "mean"), ``weighted`` (values carry weights), ``keep`` (which end of a longer
    list was kept: "first" | "last")."""

    field: int
    max_len: int
    pooling: str = "mean"
    weighted: bool = False
    keep: str = "first"

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "max_len": self.max_len, "pooling": self.pooling,
                "weighted": self.weighted, "keep": self.keep}


@dataclass(frozen=True)
class FieldLayout:
    """Slots of ``num_fields`` fields, of which ``bags`` are multi-valued (sorted by field)."""

    num_fields: int
    bags: tuple[Bag, ...] = ()

    def __post_init__(self) -> None:
        seen = [b.field for b in self.bags]
        if sorted(set(seen)) != seen or any(not 0 <= f < self.num_fields for f in seen):
            raise ShaverError(f"layout: bag fields {seen} must be distinct, sorted and in "
                              f"0..{self.num_fields - 1}")
        for b in self.bags:
            if b.max_len < 1 or b.pooling not in POOLINGS or b.keep not in KEEPS:
                raise ShaverError(f"layout: bad bag {b.to_json()} (max_len >= 1, pooling one "
                                  f"of {', '.join(POOLINGS)}, keep one of {', '.join(KEEPS)})")

    # -- building ------------------------------------------------------------------------
    @classmethod
    def single(cls, num_fields: int) -> FieldLayout:
        """Every field single-valued: one slot each."""
        return cls(int(num_fields))

    @classmethod
    def from_json(cls, num_fields: int, data: Sequence[Mapping[str, Any]] | None
                  ) -> FieldLayout:
        """The layout of :meth:`to_json` (a list of bags; None or [] = no bag)."""
        if data is None:
            return cls.single(num_fields)
        if isinstance(data, FieldLayout):
            return data
        if not isinstance(data, list | tuple):
            raise ShaverError(f"layout: expected a list of bags, found {shown(data)}")
        bags = []
        for i, d in enumerate(data):
            if not isinstance(d, Mapping) or "field" not in d or "max_len" not in d:
                raise ShaverError(f"layout[{i}]: expected {{field, max_len, pooling, ...}}, "
                                  f"found {shown(d)}")
            bags.append(Bag(field=int(d["field"]), max_len=int(d["max_len"]),
                            pooling=str(d.get("pooling", "mean")),
                            weighted=bool(d.get("weighted", False)),
                            keep=str(d.get("keep", "first"))))
        return cls(int(num_fields), tuple(bags))

    def to_json(self) -> list[dict[str, Any]] | None:
        """A list of bags (None when every field is single-valued)."""
        return [b.to_json() for b in self.bags] or None

    # -- geometry ------------------------------------------------------------------------
    @property
    def has_bags(self) -> bool:
        return bool(self.bags)

    @property
    def weighted(self) -> bool:
        """True when some bag's values carry weights (batches then carry ``w``)."""
        return any(b.weighted for b in self.bags)

    @cached_property
    def bag_of(self) -> dict[int, Bag]:
        return {b.field: b for b in self.bags}

    @cached_property
    def widths(self) -> np.ndarray:
        """int64 (fields,): slots of each field."""
        out = np.ones(self.num_fields, dtype=np.int64)
        for b in self.bags:
            out[b.field] = b.max_len
        return out

    @cached_property
    def starts(self) -> np.ndarray:
        """int64 (fields + 1,): first slot of each field, then the number of slots."""
        return np.concatenate([[0], np.cumsum(self.widths)]).astype(np.int64)

    @property
    def num_slots(self) -> int:
        return int(self.starts[-1])

    @cached_property
    def slot_field(self) -> np.ndarray:
        """int64 (slots,): the field of each slot."""
        return np.repeat(np.arange(self.num_fields, dtype=np.int64), self.widths)

    @cached_property
    def single_fields(self) -> np.ndarray:
        """int64: the single-valued fields, in order (their column in the stored ids)."""
        return np.array([f for f in range(self.num_fields) if f not in self.bag_of],
                        dtype=np.int64)

    def runs(self) -> list[tuple[str, int, int]]:
        """The slots as pieces in field order: ``("single", lo, hi)`` for a run of
        single-valued fields' slots, ``("bag", lo, hi)`` for one bag's slots."""
        pieces: list[tuple[str, int, int]] = []
        for f in range(self.num_fields):
            lo, hi = int(self.starts[f]), int(self.starts[f + 1])
            if f in self.bag_of:
                pieces.append(("bag", lo, hi))
            elif pieces and pieces[-1][0] == "single" and pieces[-1][2] == lo:
                pieces[-1] = ("single", pieces[-1][1], hi)
            else:
                pieces.append(("single", lo, hi))
        return pieces

    def describe(self, names: Sequence[str] | None = None) -> str:
        """``"genres: bag of <= 6, mean"`` per bag, for messages and reports."""
        def name(f: int) -> str:
            return names[f] if names is not None else f"field {f}"
        return "; ".join(f"{name(b.field)}: bag of <= {b.max_len}, {b.pooling}"
                         f"{', weighted' if b.weighted else ''}" for b in self.bags) or "no bags"

    # -- pooling (numpy; the torch twin is shaver.models.pooling) ------------------------
    def check_ids(self, x: np.ndarray, what: str = "x") -> None:
        """:class:`ShaverError` unless ``x`` is (rows, slots) with pads only in bag slots."""
        if x.ndim != 2 or x.shape[1] != self.num_slots:
            raise ShaverError(f"{what} has shape {x.shape}, expected (rows, {self.num_slots}) "
                              f"ids ({self.num_fields} fields, {self.num_slots} slots)")
        single = ~np.isin(self.slot_field, [b.field for b in self.bags])
        if x.size and single.any() and int(x[:, single].min()) < 0:
            raise ShaverError(f"{what}: a single-valued field holds a negative id (pads "
                              f"({PAD}) belong in bag slots only)")

    def coefficients(self, x: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """float32 (rows, slots): the pooling coefficient of each slot (module docstring)."""
        coef = np.ones(x.shape, dtype=np.float32)
        for b in self.bags:
            lo, hi = int(self.starts[b.field]), int(self.starts[b.field + 1])
            v = (x[:, lo:hi] >= 0).astype(np.float32)
            if w is not None and b.weighted:
                v = v * w[:, lo:hi].astype(np.float32)
            if b.pooling == "mean":
                total = v.sum(axis=1, keepdims=True, dtype=np.float32)
                v = np.divide(v, total, out=np.zeros_like(v), where=total != 0)
            coef[:, lo:hi] = v
        return coef

    def pool(self, values: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """values (rows, slots, k), coef (rows, slots) -> (rows, fields, k): each field's
        coefficient-weighted sum of its slots."""
        parts = []
        for kind, lo, hi in self.runs():
            if kind == "single":
                parts.append(values[:, lo:hi])
            else:
                parts.append((values[:, lo:hi] * coef[:, lo:hi, None]).sum(
                    axis=1, keepdims=True, dtype=np.float32))
        return np.concatenate(parts, axis=1)


def ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """int64: the concatenation of ``arange(starts[i], stops[i])`` (the values of ragged rows
    ``i`` that lie at ``starts[i]:stops[i]``)."""
    lengths = (np.asarray(stops) - np.asarray(starts)).astype(np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return first + np.arange(total, dtype=np.int64)


def pad_bags(offsets: np.ndarray, values: np.ndarray, max_len: int,
             weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Ragged rows (``offsets`` (rows + 1,), ``values``) -> (ids (rows, max_len) padded with
    :data:`PAD`, weights (rows, max_len) float32 or None). Rows longer than ``max_len`` keep
    their first ``max_len`` values (the data stage truncates as the spec says before)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    rows = len(offsets) - 1
    lengths = np.minimum(np.diff(offsets), max_len)
    ids = np.full((rows, max_len), PAD, dtype=np.int64)
    w = None if weights is None else np.zeros((rows, max_len), dtype=np.float32)
    total = int(lengths.sum())
    if total:
        row = np.repeat(np.arange(rows), lengths)
        col = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        src = offsets[:-1][row] + col
        ids[row, col] = values[src]
        if w is not None:
            w[row, col] = weights[src]
    return ids, w
