"""Sort the entry scores once; every budget is then a cut in that order.

``PruneOrder(scores, order)`` sorts the n*d flattened scores once (stable, so ties keep index
order and results are reproducible). The keep-mask for K kept entries marks the last K
positions of that order, so masks of growing K are nested by construction. A
:class:`MaskCursor` moves between kept counts by touching only the entries in between, which
makes a binary search over K (byte budgets) cost about two passes over the table in total.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from shaver.errors import BudgetError, ShaverError

Order = Literal["abs", "signed"]
ORDERS: tuple[str, ...] = ("abs", "signed")


class ScoreError(ShaverError):
    """Scores cannot rank the entries (NaN/inf, wrong shape, unknown scorer or order)."""


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise ScoreError(f"unknown order {order!r}: expected 'abs' (prune smallest |score| "
                         f"first, as the authors) or 'signed' (prune lowest score first)")
    return order


def check_scores(scores: np.ndarray, shape: tuple[int, ...] | None = None,
                 source: str = "scores") -> np.ndarray:
    """float (n, d) scores: finite, and of ``shape`` when given."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ScoreError(f"{source}: expected a 2-D (rows, dim) array, got shape {scores.shape}")
    if shape is not None and tuple(scores.shape) != tuple(shape):
        raise ScoreError(f"{source}: shape {tuple(scores.shape)} does not match the embedding "
                         f"table {tuple(shape)}")
    bad = ~np.isfinite(scores)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ScoreError(f"{source}: {int(bad.sum())} entries are NaN or infinite (first at "
                         f"row {first[0]}, column {first[1]}); cannot rank them")
    return scores


class PruneOrder:
    """Entries of an (n, d) table sorted once by pruning priority.

    ``order="abs"`` prunes the smallest ``|score|`` first (the authors' choice: strongly
    harmful entries are kept); ``"signed"`` prunes the lowest score first (most harmful first).
    ``ranking`` int64 (n*d,): flat entry indices, first = pruned first.
    """

    def __init__(self, scores: np.ndarray | torch.Tensor, order: str = "abs"):
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().cpu().numpy()
        scores = check_scores(scores)
        self.order = check_order(order)
        self.shape: tuple[int, int] = (int(scores.shape[0]), int(scores.shape[1]))
        self.total = int(scores.size)
        key = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32).reshape(-1))
        if order == "abs":
            key = key.abs()
        self.ranking: np.ndarray = torch.sort(key, stable=True).indices.numpy()

    def _check_kept(self, kept: int) -> int:
        if not 0 <= int(kept) <= self.total:
            raise BudgetError(f"kept entries must be in [0, {self.total}], got {kept}")
        return int(kept)

    def kept_indices(self, kept: int) -> np.ndarray:
        """int64 (kept,): flat indices of the ``kept`` highest-priority entries."""
        kept = self._check_kept(kept)
        return self.ranking[self.total - kept:]

    def mask(self, kept: int) -> np.ndarray:
        """bool (n, d): True for the ``kept`` entries kept at this cut (a fresh array)."""
        flat = np.zeros(self.total, dtype=np.bool_)
        flat[self.kept_indices(kept)] = True
        return flat.reshape(self.shape)

    def cursor(self) -> MaskCursor:
        return MaskCursor(self)


class MaskCursor:
    """A mutable keep-mask that moves between kept counts incrementally.

    ``move(K)`` returns the (n, d) mask for K kept entries; it is the SAME array each call,
    updated in place (copy it to keep one).
    """

    def __init__(self, prune_order: PruneOrder):
        self._order = prune_order
        self._flat = np.zeros(prune_order.total, dtype=np.bool_)
        self.kept = 0

    def move(self, kept: int) -> np.ndarray:
        kept = self._order._check_kept(kept)
        total, ranking = self._order.total, self._order.ranking
        if kept > self.kept:
            self._flat[ranking[total - kept: total - self.kept]] = True
        elif kept < self.kept:
            self._flat[ranking[total - self.kept: total - kept]] = False
        self.kept = kept
        return self._flat.reshape(self._order.shape)
