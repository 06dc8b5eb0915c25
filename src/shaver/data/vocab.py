"""Counting tokens (pass 1) and building vocabularies: value -> local id, OOV id 0.

Order is deterministic: local ids 1.. go to the kept values by descending train count,
ties broken by the value's text. Values seen fewer than ``min_count`` times on the train
split share the field's OOV id (0)."""

from __future__ import annotations

import numpy as np

from shaver.data.tokens import Coded, numeric_sample

#: The label of local id 0 in vocab.json (never looked up as a value).
OOV_TOKEN = "__OOV__"


class TokenCounts:
    """Occurrences of each token of one field on the train split."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, coded: Coded, rows: np.ndarray) -> None:
        """Count the tokens at ``rows`` (int indices into ``coded.codes``)."""
        if len(rows) == 0:
            return
        per_value = np.bincount(coded.codes[rows], minlength=len(coded.values))
        counts = self.counts
        for value, c in zip(coded.values, per_value.tolist()):
            if c:
                counts[value] = counts.get(value, 0) + c

    def vocabulary(self, min_count: int) -> list[str]:
        """``[OOV_TOKEN, kept values...]`` in local-id order."""
        kept = [(-c, v) for v, c in self.counts.items() if c >= min_count]
        kept.sort()
        return [OOV_TOKEN] + [v for _, v in kept]


class NumericSample:
    """A uniform, deterministic sample of a numeric field's train values (for quantile
    edges): every ``stride``-th value is kept; the stride doubles when the sample is full."""

    def __init__(self, capacity: int = 1 << 21) -> None:
        self.capacity = capacity
        self.stride = 1
        self.seen = 0
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.size = 0

    def add(self, coded: Coded, rows: np.ndarray) -> None:
        values = numeric_sample(coded.values)[coded.codes[rows]]
        index = np.arange(self.seen, self.seen + len(values), dtype=np.int64)
        self.seen += len(values)
        keep = (index % self.stride == 0) & ~np.isnan(values)
        self.parts.append((index[keep], values[keep]))
        self.size += int(keep.sum())
        while self.size > self.capacity:
            self.stride *= 2
            self.parts = [(i[i % self.stride == 0], v[i % self.stride == 0]) for i, v in self.parts]
            self.size = sum(len(i) for i, _ in self.parts)

    def values(self) -> np.ndarray:
        if not self.parts:
            return np.zeros(0)
        return np.concatenate([v for _, v in self.parts])


def lookup_table(vocab: list[str]) -> dict[str, int]:
    """value -> local id for a vocabulary (``vocab[0]`` is the OOV label, not a value)."""
    return {v: i for i, v in enumerate(vocab) if i > 0}


def local_ids(table: dict[str, int], coded: Coded) -> np.ndarray:
    """int32 (rows,) local ids of coded tokens; unseen -> 0 (OOV)."""
    get = table.get
    per_value = np.fromiter((get(v, 0) for v in coded.values), dtype=np.int32,
                            count=len(coded.values))
    return per_value[coded.codes]
