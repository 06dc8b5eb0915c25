"""The attribution data D and the stream of samples drawn from it.

``data`` selects D: ``"train"``, ``"val"``, ``"train+val"`` (any '+'-joined splits), optionally
with ``":FRACTION"`` (``"train+val:0.1"``, a seeded random 10%) or ``":COUNT"``
(``"train:50000"``, a seeded random subset of that many rows). The stream visits D in passes;
pass p is a permutation of D drawn from ``(seed, p)``, so global sample index i maps to one row
whatever the batch size, resume point or number of ranks.
"""

from __future__ import annotations

import numpy as np

from shaver.data.store import PreparedDataset, resolve_splits
from shaver.errors import AttributionError, DataError

#: The default attribution data D: the training split. The paper's D is train+val
#: (``--data train+val``), but the default cut (``auto``, :mod:`shaver.pruning.auto`) chooses
#: among candidate cuts on the validation split, and an attribution that has seen the
#: validation labels biases that choice: on MovieLens-100k DeepFM with the control variate,
#: auto then chose a signed cut at sparsity 0.8 that was best on validation and 0.011-0.012
#: below, on test, what it chose with D = train (0.7481 / 0.7526 against 0.7591 / 0.7643).
DEFAULT_DATA = "train"


def parse_data(data: str) -> tuple[tuple[str, ...], float | int | None]:
    """``"train+val:0.1"`` -> (("train", "val"), 0.1); ``"train:500"`` -> (("train",), 500)."""
    name, _, amount = str(data).partition(":")
    try:
        splits = resolve_splits(name)
    except DataError as exc:
        raise AttributionError(f"data {data!r}: {exc}") from exc
    if not amount:
        return splits, None
    try:
        value = float(amount)
    except ValueError:
        raise AttributionError(
            f"data {data!r}: expected SPLITS[:FRACTION|:COUNT], e.g. 'train+val:0.1' or "
            f"'train:50000'") from None
    if "." in amount or "e" in amount.lower():
        if not 0 < value <= 1:
            raise AttributionError(f"data {data!r}: a fraction must be in (0, 1]")
        return splits, value
    if value < 1:
        raise AttributionError(f"data {data!r}: a row count must be >= 1")
    return splits, int(value)


class SampleSource:
    """Rows of D for global sample indices. ``size``: rows of D (one pass)."""

    def __init__(self, dataset: PreparedDataset, data: str = DEFAULT_DATA, *, seed: int = 0):
        self.dataset = dataset
        self.splits, amount = parse_data(data)
        self.seed = int(seed)
        self._maps = [(s, dataset.labels(s)) for s in self.splits]
        sizes = [len(labels) for _, labels in self._maps]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self._starts[-1])
        if total == 0:
            raise AttributionError(f"data {data!r}: the split(s) {'+'.join(self.splits)} are empty")
        self.subset: np.ndarray | None = None
        if amount is not None:
            keep = max(1, round(amount * total)) if isinstance(amount, float) else amount
            if keep < total:
                rng = np.random.default_rng([self.seed, 0x5EED, 1])
                self.subset = np.sort(rng.choice(total, size=keep, replace=False))
        self.size = total if self.subset is None else len(self.subset)
        self._order: tuple[int, np.ndarray] | None = None

    def _pass_order(self, p: int) -> np.ndarray:
        if self._order is None or self._order[0] != p:
            self._order = (p, np.random.default_rng([self.seed, 0x5EED, 2, p]).permutation(self.size))
        return self._order[1]

    def rows_of(self, lo: int, hi: int) -> np.ndarray:
        """int64 (hi - lo,): row (index into the concatenated splits) of samples lo..hi-1."""
        idx = np.arange(lo, hi, dtype=np.int64)
        out = np.empty(len(idx), dtype=np.int64)
        passes = idx // self.size
        for p in np.unique(passes):
            sel = passes == p
            out[sel] = self._pass_order(int(p))[idx[sel] % self.size]
        return out if self.subset is None else self.subset[out]

    def batch(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Samples lo..hi-1 -> (x int64 (B, slots) global ids (bag pads -1), y float32 (B,),
        w float32 (B, slots) bag value weights or None)."""
        rows = self.rows_of(lo, hi)
        order = np.argsort(rows, kind="stable")
        x = np.empty((len(rows), self.dataset.layout.num_slots), dtype=np.int64)
        y = np.empty(len(rows), dtype=np.float32)
        w = (np.empty((len(rows), x.shape[1]), dtype=np.float32)
             if self.dataset.layout.weighted else None)
        sorted_rows = rows[order]
        for k, (split, labels) in enumerate(self._maps):
            sel = (sorted_rows >= self._starts[k]) & (sorted_rows < self._starts[k + 1])
            if sel.any():
                local = sorted_rows[sel] - self._starts[k]
                x[order[sel]], part_w = self.dataset.slots(split, local)
                y[order[sel]] = labels[local]
                if w is not None:
                    w[order[sel]] = part_w
        return x, y, w

    def frequencies(self, chunk: int = 1 << 20) -> np.ndarray:
        """int64 (num_features,): occurrences of each global id over D (one pass; every
        value of a bag counts, pads do not)."""
        n = self.dataset.num_features
        if self.subset is None and self.splits == ("train",):
            return np.asarray(self.dataset.frequencies, dtype=np.int64)
        counts = np.zeros(n, dtype=np.int64)
        rows = np.arange(self.size) if self.subset is None else self.subset
        for lo in range(0, len(rows), chunk):
            part = rows[lo:lo + chunk]
            for k, (split, _) in enumerate(self._maps):
                sel = part[(part >= self._starts[k]) & (part < self._starts[k + 1])]
                if len(sel):
                    local = sel - self._starts[k]
                    if self.subset is None:
                        local = slice(int(local[0]), int(local[-1]) + 1)
                    block = self.dataset.slots(split, local)[0]
                    counts += np.bincount(block[block >= 0].ravel(), minlength=n)
        return counts
