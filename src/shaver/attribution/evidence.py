"""Standard errors that count every source of error, for a stop on part of a pass.

The accumulator's :meth:`~shaver.attribution.accumulator.Accumulator.stderr` is the spread of
an entry's own credits over the walks, plus the surrogate sample's. Before a full pass it
misses one source: the rows of D that no walk (or no surrogate row) has reached yet. An entry
whose id no walked row contained has sumsq = 0, so its standard error is 0 although its
phi is not known at all; an entry seen once has a spread estimated from one value. With a
floor of one pass that did not matter; a rule that may stop after a few thousand walks must
not read "never seen" as "known".

The fix uses what is known exactly: the frequency f_i of entry i's id in D (counted for the
codebook anyway), so p_i = f_i / |D| is the chance that a uniform row contains it. The credit
of entry i in a walked row is x_i = c_i 1[row contains i]; over n uniform rows the mean of
x_i has variance (p_i E[c_i^2 | contains] - phi_i^2) / n. Its per-hit second moment is
estimated by shrinking the entry's own towards its group's, the same field and column
(every row of D contains exactly one id of each single-valued field, so the group's mean
square per walked row is sum_i sumsq_i / n; a bag field holds h_f ids per row on average,
``hits``, and the group's mean square per HIT is sum_i sumsq_i / (h_f n)):

    m2_i = (sumsq_i + a * m2_group) / (p_i n + a),     a = ``PRIOR_HITS`` pseudo-hits,

and the walk term's variance is max(p_i m2_i - mean_i^2, empirical) / n. For an entry seen
many times (p_i n >> a) this is the empirical variance; for one not yet seen it is
p_i m2_group / n: what a typical credit of its field would do at its frequency. The sampled
surrogate's term is the same with S's sums and size, times the finite-population factor
(1 - |S| / |D|), so it vanishes once S is D. (An entry absent from D has p_i = 0: phi = 0
exactly, a null player, and no error.) The covariance of the two means is left out, as in
the accumulator (it is negative where the surrogate tracks the credit).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shaver.attribution.accumulator import Accumulator
from shaver.errors import AttributionError
from shaver.layout import FieldLayout

#: Pseudo-hits of the group's spread in an entry's second moment. One: an entry seen once
#: weighs its own square as much as its field's typical one.
PRIOR_HITS = 1.0


class RowEvidence:
    """Standard errors of phi counting walk noise, the surrogate sample's error and rows not
    yet reached, for a table of ``field_dims`` rows (one id per field per row) of ``dim``
    columns, with ``frequencies`` (num_features,) counted over the ``size`` rows of D."""

    def __init__(self, field_dims: Sequence[int], frequencies: np.ndarray, size: int, dim: int,
                 device: torch.device | str = "cpu", prior_hits: float = PRIOR_HITS,
                 hits: np.ndarray | None = None):
        rows = int(sum(field_dims))
        freq = torch.as_tensor(np.asarray(frequencies, dtype=np.float64), device=device)
        if freq.numel() != rows:
            raise AttributionError(f"frequencies has {freq.numel()} ids, the table {rows} rows")
        self.size, self.dim, self.prior = int(size), int(dim), float(prior_hits)
        self.fields = len(field_dims)
        #: p per row of the table (n,): chance that a uniform row of D contains that id
        self.row_share = freq / max(self.size, 1)
        #: field of each row of the table (n,)
        self.field = torch.repeat_interleave(torch.arange(self.fields, device=device),
                                             torch.as_tensor(list(field_dims), device=device))
        #: ids per row of D of each field (None: one each, no bag)
        self.hits = None if hits is None else torch.as_tensor(
            np.asarray(hits, dtype=np.float64), device=device).clamp_min(1e-12)

    @property
    def share(self) -> torch.Tensor:
        """p_i per entry (n*d,)."""
        return self.row_share.repeat_interleave(self.dim)

    def walk_variance(self, total: torch.Tensor, squares: torch.Tensor, n: float) -> torch.Tensor:
        """Variance of the mean of n uniform rows' values, from their sums ``total`` and
        ``squares`` (n*d,), with the shrunk per-hit second moment (module docstring)."""
        if n <= 0:
            return torch.zeros_like(total)
        mean = (total / n).view(-1, self.dim)
        sq = squares.view(-1, self.dim)
        own = (sq / n - mean * mean).clamp_min(0)
        pooled = torch.zeros(self.fields, self.dim, dtype=sq.dtype, device=sq.device)
        pooled.index_add_(0, self.field, sq)  # per (field, column): sum of squares
        if self.hits is not None:  # per hit, not per row, in a bag field
            pooled = pooled / self.hits[:, None]
        share = self.row_share[:, None]
        m2 = (sq + self.prior * pooled[self.field] / n) / (share * n + self.prior)
        return (torch.maximum(share * m2 - mean * mean, own).clamp_min(0) / n).reshape(-1)

    def stderr(self, acc: Accumulator) -> torch.Tensor:
        """float64 (n*d,): sqrt(walk term + surrogate sample term) of ``acc``'s phi."""
        var = self.walk_variance(acc.sum, acc.sumsq, float(acc.count))
        cv = acc.cv
        if acc.offset is None and cv is not None and cv.count < cv.size:
            shrink = max(0.0, 1.0 - cv.count / max(cv.size, 1))
            var = var + shrink * self.walk_variance(cv.sum, cv.sumsq, float(cv.count))
        return var.sqrt()


def field_hits(layout: FieldLayout, field_dims: Sequence[int], frequencies: np.ndarray,
               size: int) -> np.ndarray | None:
    """float64 (fields,): ids per row of D of each field (1 for a single-valued field, the
    bag's mean length for a bag, from the ``frequencies`` over D's ``size`` rows), or None
    without bags."""
    if not layout.has_bags:
        return None
    out = np.ones(len(field_dims), dtype=np.float64)
    row_field = np.repeat(np.arange(len(field_dims)), np.asarray(field_dims, dtype=np.int64))
    totals = np.bincount(row_field, weights=np.asarray(frequencies, dtype=np.float64),
                         minlength=len(field_dims))
    for b in layout.bags:
        out[b.field] = totals[b.field] / max(int(size), 1)
    return out
