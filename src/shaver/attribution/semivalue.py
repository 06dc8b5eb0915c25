"""Budget-aware scores: semivalues over the binned walk credits (:mod:`.binned`).

phi (Shapley) averages an entry's marginal contribution over coalitions of every size with
equal weight. Pruning to sparsity s runs the model on coalitions that keep few entries, and an
entry whose value came from its interaction partners is worth little once they are gone. A
semivalue puts weight u(c) on the coalition size instead (Beta Shapley, Kwon & Zou 2022; Data
Banzhaf, Wang & Jia 2023). Here, with stratum means S_b = share_b / p_b from the bins::

    value = sum_b u_b * S_b,   u_b = sum_{c in bin b} w(c) / sum_{c=1..P} w(c)

with a log-normal kernel over the kept fraction c / P, centred on a target fraction f*::

    w(c) = exp(-(ln(c / P) - ln f*)^2 / (2 * width^2))

What these scores are: each S_b is an unbiased estimate of the entry's mean marginal
contribution over coalitions of bin b (the walk's step is uniform, p_b is known exactly), so
``value`` is an unbiased estimate of the semivalue whose weight on coalition size c is
u_b(c) / |bin b| (piecewise constant over the bins). Efficiency no longer holds: the values
of a sample do not sum to its loss gap. With w = 1 (``target=None``) u_b = p_b and the value
is phi exactly. Variance: bin b gets a share p_b of the walks, so a weighting concentrated
on small bins has up to 1 / p_b times phi's variance.

The target f* of a global sparsity is the kept fraction of the ACTIVE entries of an average
sample, not 1 - s: kept entries sit mostly on frequent rows, so a sample keeps far more than
1 - s of its entries. :func:`active_kept_fraction` measures it for a mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shaver.attribution.binned import bin_probabilities
from shaver.errors import AttributionError

#: Width (natural-log units) of the kernel over the kept fraction: ~ a factor 2 either side.
DEFAULT_WIDTH = 0.7


class MissingBinsError(AttributionError):
    """A budget-aware score was asked of an attribution without bins."""


def bin_weights(edges: Sequence[int], target: float | None,
                width: float = DEFAULT_WIDTH) -> np.ndarray:
    """float64 (B,) weights u_b (sum 1) over the bins; ``target=None``: u_b = p_b (Shapley)."""
    edges = [int(e) for e in edges]
    players = edges[-1] - 1
    if target is None:
        return bin_probabilities(edges)
    if not 0 <= float(target) <= 1 or width <= 0:
        raise AttributionError(f"target kept fraction must be in [0, 1] and width > 0, got "
                               f"{target} and {width}")
    f_star = max(float(target), 1.0 / players)  # the smallest coalition keeps one entry
    kept = np.arange(1, players + 1, dtype=np.float64)
    w = np.exp(-(np.log(kept / players) - np.log(f_star)) ** 2 / (2 * width * width))
    per_bin = np.add.reduceat(w, np.asarray(edges[:-1]) - 1)
    return per_bin / per_bin.sum()


def require_bins(attribution) -> None:
    """Raise :class:`MissingBinsError` when ``attribution`` has no binned credits."""
    if getattr(attribution, "bins", None) is None:
        raise MissingBinsError(
            "this attribution has no bins, so it cannot give budget-aware scores: it was "
            "computed with bins=0 or by shaver < 0.2 (result format 1). Re-run `shaver "
            "attribute --run RUN` (bins are on by default, --bins N) or attribute(..., bins=8)")


def semivalue_scores(attribution, target: float | None,
                     width: float = DEFAULT_WIDTH) -> np.ndarray:
    """float32 (n, d): the budget-aware value of every entry for a target kept fraction."""
    require_bins(attribution)
    u = bin_weights(attribution.bin_edges, target, width)
    p = bin_probabilities(attribution.bin_edges)
    coef = torch.from_numpy(u / p).float()
    return torch.einsum("b,bnd->nd", coef, attribution.bins).numpy()


def active_kept_fraction(mask: np.ndarray, frequencies: np.ndarray) -> float:
    """Mean over samples of the fraction of their active entries that ``mask`` keeps.

    mask: bool (n, d), True = kept; frequencies: (n,) occurrences of each row in the data
    (a sample of m fields holds m rows, so this is a frequency-weighted mean over rows).
    """
    freq = np.asarray(frequencies, dtype=np.float64)
    total = freq.sum()
    if total <= 0:
        return float(np.asarray(mask).mean())
    kept_per_row = np.asarray(mask).sum(axis=1).astype(np.float64)
    return float((freq * kept_per_row).sum() / (total * mask.shape[1]))
