"""List fields: how a list's text reads (values, weights, truncation), in one place.

Preparation (:mod:`~shaver.data.decode`) and deployment (:class:`~shaver.data.encode.RowEncoder`)
both read list texts with :func:`parse_lists`, so a row encodes alike in both. A text is
split on the field's ``separator``; empty values (``a||b``, or the empty text) are dropped;
with ``weighted`` each value is ``value:weight`` (split at the last ``:``; the weight a
finite number, not negative with mean pooling); a list longer than ``max_len`` keeps its
first or last ``max_len`` values (``keep``). Duplicates stay, in list order. The work is
done once per distinct text of a block (with pyarrow), not once per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shaver.data.spec import FieldSpec
from shaver.data.tokens import BadValue, Coded
from shaver.layout import ranges


@dataclass(frozen=True)
class Lists:
    """Parsed distinct list texts: ``lengths`` int64 (texts,) values kept of each text,
    ``items`` pyarrow string array (sum of lengths,) their values in list order,
    ``weights`` float32 (sum of lengths,) their weights, or None for an unweighted field."""

    lengths: np.ndarray
    items: Any
    weights: np.ndarray | None

    @property
    def starts(self) -> np.ndarray:
        """int64 (texts + 1,): text i's values are items[starts[i]:starts[i + 1]]."""
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_lists(f: FieldSpec, values: Any) -> Lists:
    """The values (and weights) of list field ``f`` in each of ``values`` (distinct texts:
    a list of str or a pyarrow string array); raises :class:`BadValue` naming the text's
    index and what was expected."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = values if isinstance(values, pa.Array) else pa.array(list(values), pa.string())
    n = len(texts)
    parts = pc.split_pattern(texts.fill_null(""), pattern=f.separator)
    raw_lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = parts.flatten()
    owner = np.repeat(np.arange(n, dtype=np.int64), raw_lengths)
    nonempty = pc.binary_length(flat).to_numpy(zero_copy_only=False) > 0
    if not nonempty.all():
        flat = flat.filter(pa.array(nonempty))
        owner = owner[nonempty]
    weights = _weights(f, flat, owner) if f.weighted else None
    if f.weighted:
        flat = pc.list_element(pc.split_pattern(flat, pattern=":", max_splits=1, reverse=True),
                               0)
    lengths = np.bincount(owner, minlength=n).astype(np.int64)
    if len(owner) and int(lengths.max()) > f.max_len:
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        pos = np.arange(len(owner), dtype=np.int64) - starts[owner]
        keep = (pos < f.max_len) if f.keep == "first" else (pos >= lengths[owner] - f.max_len)
        flat = flat.filter(pa.array(keep))
        weights = None if weights is None else weights[keep]
        lengths = np.minimum(lengths, f.max_len)
    return Lists(lengths, flat, weights)


def _weights(f: FieldSpec, flat: Any, owner: np.ndarray) -> np.ndarray:
    """float32 weights of ``value:weight`` items (:class:`BadValue` on a bad one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    expected = ("expected value:weight items, the weight a finite number"
                + (" >= 0 (mean pooling)" if f.pooling == "mean" else ""))
    pieces = pc.split_pattern(flat, pattern=":", max_splits=1, reverse=True)
    two = pc.list_value_length(pieces).to_numpy(zero_copy_only=False) == 2
    if not two.all():
        items = flat.to_pylist()
        i = int(np.flatnonzero(~two)[0])
        raise BadValue(int(owner[i]), f"value {_shown(items[i])} has no ':weight' ({expected})")
    ids, texts = pc.list_element(pieces, 0), pc.list_element(pieces, 1)
    try:
        w = pc.cast(texts, pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(w)
    except pa.ArrowInvalid:
        w = np.array([_number(t) for t in texts.to_pylist()], dtype=np.float64)
        bad = ~np.isfinite(w)
    if f.pooling == "mean":
        bad |= w < 0
    bad |= pc.binary_length(ids).to_numpy(zero_copy_only=False) == 0
    if bad.any():
        items = flat.to_pylist()
        i = int(np.flatnonzero(bad)[0])
        what = "an empty value" if not items[i].rpartition(":")[0] else \
            f"weight {_shown(items[i].rpartition(':')[2])}"
        raise BadValue(int(owner[i]), f"value {_shown(items[i])} has {what} ({expected})")
    return w.astype(np.float32)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


class ListColumn:
    """A list field's rows in a block: the parsed distinct texts (:class:`Lists`) and int32
    (rows,) codes into them (as :class:`~shaver.data.tokens.Coded` is for other fields)."""

    def __init__(self, lists: Lists, codes: np.ndarray):
        self.lists, self.codes = lists, codes

    def take(self, rows: np.ndarray) -> ListColumn:
        return ListColumn(self.lists, self.codes[rows])

    def flat(self) -> tuple[np.ndarray, Coded, np.ndarray | None]:
        """``(lengths int64 (rows,), values Coded (sum of lengths,), weights float32 or
        None)``: the rows' values in row order, then list order."""
        import pyarrow.compute as pc

        starts = self.lists.starts
        lengths = self.lists.lengths[self.codes]
        idx = ranges(starts[:-1][self.codes], starts[1:][self.codes])
        enc = pc.dictionary_encode(self.lists.items)
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        weights = None if self.lists.weights is None else self.lists.weights[idx]
        return lengths, Coded(enc.dictionary, codes[idx], distinct=True), weights
