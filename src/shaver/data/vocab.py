"""Vocabularies: provisional ids while reading, final local ids once counts are known.

While the raw text is read (once), each field's tokens get provisional ids in order of
first appearance and their train-split occurrences are counted. Then the vocabulary is
fixed: local id 0 is the field's OOV id; ids 1.. go to the values seen at least
``min_count`` times on the train split, by descending count, ties broken by the value's
text, so the result does not depend on reading order or block size. Quantile fields bin
their raw numbers with edges computed exactly from the train counts.
"""

from __future__ import annotations

from itertools import repeat

import numpy as np

from shaver.data.tokens import MISSING, Coded, numeric_sample, quantile_vocab

#: The label of local id 0 in vocab.json (never looked up as a value).
OOV_TOKEN = "__OOV__"


class FieldIndex:
    """Provisional ids and train counts of one field's tokens."""

    def __init__(self) -> None:
        self.table: dict[str, int] = {}
        self.counts = np.zeros(1024, dtype=np.int64)

    def ids(self, coded: Coded) -> np.ndarray:
        """int32 (rows,) provisional ids of coded tokens (new tokens get new ids)."""
        table = self.table
        values = coded.values
        pids = np.fromiter(map(table.get, values, repeat(-1)), dtype=np.int64, count=len(values))
        new = np.flatnonzero(pids < 0)
        if coded.distinct and len(new):  # distinct texts: number the new ones in one go
            first = len(table)
            table.update(zip(map(values.__getitem__, new.tolist()), range(first, first + len(new))))
            pids[new] = np.arange(first, first + len(new))
        else:
            for i in new.tolist():
                pids[i] = table.setdefault(values[i], len(table))
        return pids.astype(np.int32)[coded.codes]

    def count(self, pids: np.ndarray) -> None:
        """Add occurrences of provisional ids (the train rows of a block)."""
        per_id = np.bincount(pids, minlength=len(self.table))
        if len(per_id) > len(self.counts):
            grown = np.zeros(max(len(per_id), 2 * len(self.counts)), dtype=np.int64)
            grown[:len(self.counts)] = self.counts
            self.counts = grown
        self.counts[:len(per_id)] += per_id

    def merge(self, keys: list[str], counts: np.ndarray) -> np.ndarray:
        """Add another part's tokens (distinct ``keys`` in its provisional-id order) and
        their counts; int32 (len(keys),) the provisional id here of each of its ids."""
        coded = Coded(keys, np.arange(len(keys), dtype=np.int32), distinct=True)
        pids = self.ids(coded)
        self.count(np.zeros(0, dtype=np.int32))  # grow the counts array to the table
        self.counts[pids] += counts  # keys are distinct: no repeated index
        return pids

    def finish(self, min_count: int) -> tuple[list[str], np.ndarray]:
        """``(vocab, local)``: ``vocab = [OOV_TOKEN, kept values...]`` in local-id order and
        ``local`` int32 (provisional ids,) the local id of each provisional id."""
        keys = list(self.table)
        counts = self.counts[:len(keys)]
        kept = np.flatnonzero(counts >= min_count).tolist()
        kept.sort(key=lambda p: (-int(counts[p]), keys[p]))
        local = np.zeros(len(keys), dtype=np.int32)
        local[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
        return [OOV_TOKEN] + [keys[p] for p in kept], local


class QuantileIndex(FieldIndex):
    """Provisional ids over a quantile field's raw numbers; bins fixed at :meth:`finish`."""

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins
        self.edges = np.zeros(0)

    def finish(self, min_count: int) -> tuple[list[str], np.ndarray]:
        keys = list(self.table)
        x = numeric_sample(keys) if keys else np.zeros(0)
        w = self.counts[:len(keys)]
        seen = ~np.isnan(x) & (w > 0)
        self.edges = weighted_quantile_edges(x[seen], w[seen], self.bins)
        vocab = [OOV_TOKEN, *quantile_vocab(self.edges)]
        bins = np.searchsorted(self.edges, x, side="right") + 2  # local ids of Q0.. start at 2
        local = np.where(np.isnan(x), vocab.index(MISSING), bins).astype(np.int32)
        return vocab, local


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
