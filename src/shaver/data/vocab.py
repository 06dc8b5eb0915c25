"""Vocabularies: provisional ids while reading, final local ids once counts are known.

While the raw text is read (once), the tokens of all fields get provisional ids in one
:class:`~shaver.data.strtable.StringTable` keyed by (field, text), in order of first
appearance, and their train-split occurrences are counted. Then each field's vocabulary
is fixed: local id 0 is the field's OOV id; ids 1.. go to the values seen at least
``min_count`` times on the train split, by descending count, ties broken by the value's
text, so the result does not depend on reading order, block size or hashing. Quantile
fields bin their raw numbers with edges computed exactly from the train counts.
"""

from __future__ import annotations

import numpy as np

from shaver.data.spec import FieldSpec
from shaver.data.strtable import StringTable, arrow_strings, concat_strings
from shaver.data.tokens import MISSING, Coded, numeric_sample, quantile_vocab

#: The label of local id 0 in vocab.json (never looked up as a value).
OOV_TOKEN = "__OOV__"


def distinct_strings(coded: Coded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(offsets, data, codes)``: the distinct tokens of a coded column in arrow layout
    (see :func:`~shaver.data.strtable.arrow_strings`) and int64 (rows,) codes into them."""
    strings = coded.strings()
    codes = coded.codes
    if not coded.distinct:
        import pyarrow.compute as pc

        enc = pc.dictionary_encode(strings)
        codes = enc.indices.to_numpy(zero_copy_only=False)[codes]
        strings = enc.dictionary
    offsets, data = arrow_strings(strings)
    return offsets, data, codes


class Vocabularies:
    """Provisional ids and train counts of every field's tokens (see the module doc)."""

    def __init__(self) -> None:
        self.table = StringTable()
        self.counts = np.zeros(1024, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.table)

    def __getstate__(self) -> dict:
        return {"table": self.table, "counts": self.counts[:len(self.table)]}

    def add(self, fields: list[Coded], train: np.ndarray,
            tags: list[int] | None = None) -> np.ndarray:
        """int32 (rows, fields) provisional ids of a block's coded fields; counts the rows
        where ``train`` (bool (rows,)) is set. ``tags``: the field index of each coded
        column (default 0, 1, ...). A list field's values are added as one column of
        their own (one entry per value, ``train`` per value), under the field's tag."""
        rows, nf = len(train), len(fields)
        field_of = np.arange(nf, dtype=np.int32) if tags is None else \
            np.asarray(tags, dtype=np.int32)
        strings = []
        entry = np.empty((nf, rows), dtype=np.int64)  # row's index into all fields' strings
        base = 0
        for j, coded in enumerate(fields):
            offsets, data, codes = distinct_strings(coded)
            strings.append((offsets, data))
            np.add(codes, base, out=entry[j])
            base += len(offsets) - 1
        sizes = [len(o) - 1 for o, _ in strings]
        offsets, data = concat_strings(strings)
        tags = np.repeat(field_of, sizes)
        pids = self.table.ids(offsets, data, tags).astype(np.int32)
        counted = np.where(train, entry, base)  # rows off the train split: one spare bin
        self._count(pids, np.bincount(counted.ravel(), minlength=base + 1)[:base])
        return np.ascontiguousarray(pids[entry].T)

    def _count(self, pids: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts`` to DISTINCT provisional ids ``pids``."""
        if len(self.table) > len(self.counts):
            grown = np.zeros(max(len(self.table), 2 * len(self.counts)), dtype=np.int64)
            grown[:len(self.counts)] = self.counts
            self.counts = grown
        self.counts[pids] += counts

    def merge(self, other: Vocabularies) -> np.ndarray:
        """Add another part's tokens and counts; int64 (len(other),) the provisional id
        here of each of its provisional ids."""
        offsets, data, tags = other.table.raw()
        pids = self.table.ids(offsets, data, tags)
        self._count(pids, other.counts[:len(other)])
        return pids

    def finish(self, fields: list[FieldSpec], min_counts: list[int]
               ) -> tuple[list[list[str]], np.ndarray, dict[str, np.ndarray]]:
        """``(vocabs, local, edges)``: per field ``[OOV_TOKEN, kept values...]`` in local-id
        order; int32 (provisional ids,) the local id of each provisional id; the inner bin
        edges of quantile fields."""
        tags = self.table.tags
        counts = self.counts[:len(self)]
        order = np.argsort(tags, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(tags, minlength=len(fields)))])
        local = np.zeros(len(self), dtype=np.int32)
        vocabs, edges = [], {}
        for j, (f, min_count) in enumerate(zip(fields, min_counts)):
            pids = order[bounds[j]:bounds[j + 1]]  # this field's, in provisional-id order
            if f.discretiser == "quantile":
                vocab, local[pids], edges[f.name] = _quantile_finish(
                    self.table.texts(pids), counts[pids], f.bins)
            else:
                kept = pids[counts[pids] >= min_count]
                texts = self.table.texts(kept)
                kept_counts = counts[kept].tolist()
                rank = sorted(range(len(kept)), key=lambda i: (-kept_counts[i], texts[i]))
                local[kept[rank]] = np.arange(1, len(kept) + 1, dtype=np.int32)
                vocab = [OOV_TOKEN] + [texts[i] for i in rank]
            vocabs.append(vocab)
        return vocabs, local, edges


def _quantile_finish(keys: list[str], counts: np.ndarray, bins: int
                     ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A quantile field's vocabulary, local id of each raw text and bin edges."""
    x = numeric_sample(keys) if keys else np.zeros(0)
    seen = ~np.isnan(x) & (counts > 0)
    edges = weighted_quantile_edges(x[seen], counts[seen], bins)
    vocab = [OOV_TOKEN, *quantile_vocab(edges)]
    binned = np.searchsorted(edges, x, side="right") + 2  # local ids of Q0.. start at 2
    return vocab, np.where(np.isnan(x), vocab.index(MISSING), binned).astype(np.int32), edges


def weighted_quantile_edges(x: np.ndarray, weights: np.ndarray, bins: int) -> np.ndarray:
    """Distinct inner edges: the smallest value whose cumulative weight reaches k/bins of the
    total, k = 1..bins-1 (the inverted-CDF quantile of the weighted values)."""
    if len(x) == 0:
        return np.zeros(0)
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(weights[order])
    targets = cum[-1] * np.arange(1, bins) / bins
    idx = np.searchsorted(cum, targets, side="left")
    return np.unique(x[order][np.minimum(idx, len(x) - 1)])


def lookup_table(vocab: list[str]) -> dict[str, int]:
    """value -> local id for a vocabulary (``vocab[0]`` is the OOV label, not a value)."""
    return {v: i for i, v in enumerate(vocab) if i > 0}
