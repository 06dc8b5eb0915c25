"""Walk credits kept per bin of the coalition's kept fraction (budget-aware semivalues).

A sample has P = m*d active entries; its walk removes them one at a time from the full
coalition. Step t removes an entry from a coalition that keeps c = P - t of the P entries
(c = 1..P, the removed entry included), i.e. its credit is a marginal contribution to a
coalition of kept fraction c / P. In a uniform permutation an entry's step is uniform, so the
probability that its credit falls in bin b is exactly p_b = (positions of bin b) / P, the same
for every entry and sample.

Bins are ranges of c: ``edges`` e_0 = 1 < e_1 < ... < e_B = P + 1, bin b holding
c in [e_b, e_{b+1}). They are geometric in c (finer at small kept fractions, where on-device
budgets live: sparsity 0.95-0.999 leaves a few kept entries per sample) and every bin holds at
least one position, so B <= P.

State: ``sums`` float32 (B, n*d) of credits per bin and global entry. With ``count`` samples
seen (the accumulator's, ALL samples), ``sums[b] / count`` is the bin's share of phi: summed
over bins it is phi, and ``sums[b] / (count * p_b)`` is an unbiased estimate of the entry's
mean marginal contribution to coalitions of bin b (frequency-weighted like phi). A sample
with bags has fewer real players than P; its credits are weighted so that the same holds
(see :meth:`BinnedCredits.add`), and the bins then sum to phi in expectation. The weighting
of those stratum means into one score per budget is :mod:`shaver.attribution.semivalue`.

Memory: float32 (not float64) and :data:`DEFAULT_BINS` = 8 bins. Full Criteo's table, about
1.1M x 16 = 17.6M entries, then takes 8 x 4 x 17.6M = 563 MB of bins beside the 282 MB of the
float64 sum / sumsq: 845 MB on one process, 1.69 GB under torchrun (each rank also holds the
round's pending increments), within the 2 GB bound. Float32 sums keep ~7 significant digits:
over N credits of one entry the rounding error grows like sqrt(N) * 6e-8 relative (2e-4 at
1e7 credits), far below the walks' sampling error. 16 bins would take 1.13 GB on one process
and 2.25 GB under torchrun.
"""

from __future__ import annotations

import numpy as np
import torch

from shaver.attribution.estimator.common import real_entries
from shaver.errors import AttributionError

#: Bins of a new attribution (0 switches the bins off).
DEFAULT_BINS = 8


def bin_edges(players: int, bins: int) -> list[int]:
    """Edges over c (kept entries before a removal, 1..P): ``bins + 1`` increasing ints from 1
    to P + 1, geometric in c, at least one position per bin.

    Raises :class:`AttributionError` when ``bins`` < 1 or ``bins`` > ``players`` (a bin
    without a walk position could never be estimated).
    """
    players, bins = int(players), int(bins)
    if bins < 1:
        raise AttributionError(f"bins must be >= 1 (or 0 for no bins), got {bins}")
    if bins > players:
        raise AttributionError(
            f"{bins} bins need at least {bins} walk positions, but a sample has only m*d = "
            f"{players} active entries; use bins <= {players}")
    geo = np.geomspace(1.0, players + 1.0, bins + 1)
    edges = [1]
    for i in range(1, bins):
        edge = max(int(round(geo[i])), edges[-1] + 1)
        edges.append(min(edge, players + 1 - (bins - i)))
    edges.append(players + 1)
    return edges


def check_edges(edges: list[int], players: int) -> list[int]:
    """``edges`` as ints, checked to be bin edges over 1..``players``."""
    edges = [int(e) for e in edges]
    ok = (len(edges) >= 2 and edges[0] == 1 and edges[-1] == players + 1
          and all(a < b for a, b in zip(edges, edges[1:])))
    if not ok:
        raise AttributionError(f"bin edges {edges} are not increasing from 1 to m*d + 1 = "
                               f"{players + 1}")
    return edges


def bin_probabilities(edges: list[int]) -> np.ndarray:
    """float64 (B,): p_b, the probability that a uniform walk credits an entry in bin b."""
    widths = np.diff(np.asarray(edges, dtype=np.float64))
    return widths / widths.sum()


def step_bins(edges: list[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """LongTensor (P,): the bin of walk step t (coalition of c = P - t kept entries)."""
    players = edges[-1] - 1
    kept = torch.arange(players, 0, -1)
    return (torch.bucketize(kept, torch.tensor(edges[1:-1]), right=True)).to(device)


class BinnedCredits:
    """Credit sums per (bin, global entry) for walks over ``players`` active entries."""

    def __init__(self, num_entries: int, players: int, bins: int = DEFAULT_BINS,
                 device: torch.device | str = "cpu", edges: list[int] | None = None):
        self.players = int(players)
        self.edges = check_edges(edges, self.players) if edges else bin_edges(players, bins)
        self.num_entries = int(num_entries)
        self.sums = torch.zeros(len(self.edges) - 1, self.num_entries, dtype=torch.float32,
                                device=device)
        self._step_bin = step_bins(self.edges, device)

    @property
    def bins(self) -> int:
        return len(self.edges) - 1

    def add(self, entries: torch.Tensor, credits: torch.Tensor, perm: torch.Tensor,
            weight: float = 1.0, real: torch.Tensor | None = None) -> None:
        """entries (B, P) global flat indices (-1: a pad, skipped), credits (B, P) in ENTRY
        order, perm (B, K) the walk (position t holds the entry removed at step t; K = P, or
        K < P for a walk truncated after the real players); ``weight`` scales the credits
        (0.5 for each half of an antithetic pair); ``real`` (B,) the number of REAL players
        of each sample (None: all P are real).

        With bags a sample has P_b <= P real players: its step t removes an entry from a
        coalition keeping c = P_b - t of them, a kept fraction c / P_b, binned as the
        position ``ceil(c * P / P_b)`` of the padded scale (the same bin when P_b = P). That
        map puts q_b = (its steps in bin b) / P_b of the sample's steps in bin b, not p_b,
        so each credit is weighted p_b / q_b (importance weighting): a bin's sum then
        estimates p_b times the sample's mean marginal contribution over that bin's
        coalitions, as for single-valued samples, and sums[b] / (count * p_b) stays an
        unbiased stratum mean. (A sample with so few real players that no step of it maps
        to bin b adds nothing to that bin; the shares then sum to phi in expectation only.)
        """
        batch, walk = perm.shape
        players = entries.shape[1]
        if players != self.players:
            raise AttributionError(f"walks over {players} entries, bins built for "
                                   f"{self.players}")
        values = credits.to(torch.float32) * weight
        if real is None and walk == players:
            steps = torch.arange(players, device=perm.device).expand(batch, -1)
            position = torch.empty_like(perm).scatter_(1, perm, steps)
            flat = self._step_bin.to(perm.device)[position] * self.num_entries + entries
            flat, values = real_entries(flat.masked_fill_(entries < 0, -1), values)
            self.sums.view(-1).index_add_(0, flat, values)
            return
        count = (torch.full((batch,), players, device=perm.device) if real is None
                 else real.to(perm.device).long())
        steps = torch.arange(walk, device=perm.device).expand(batch, -1)
        kept = count.unsqueeze(1) - steps  # c, per step
        scaled = torch.div(kept * players + count.unsqueeze(1) - 1, count.clamp_min(1)
                           .unsqueeze(1), rounding_mode="floor")  # ceil(c * P / P_b)
        inner = torch.tensor(self.edges[1:-1], device=perm.device)
        bins = torch.bucketize(scaled, inner, right=True)
        live = kept > 0
        hits = torch.zeros(batch, self.bins, device=perm.device).scatter_add_(
            1, bins, live.to(torch.float32))  # the sample's steps per bin
        probs = torch.from_numpy(bin_probabilities(self.edges)).float().to(perm.device)
        q = hits / count.clamp_min(1).unsqueeze(1)
        factor = torch.where(hits > 0, probs / q.clamp_min(1e-30), torch.zeros_like(q))
        who = entries.gather(1, perm)
        flat = torch.where(live & (who >= 0), bins * self.num_entries + who,
                           torch.full_like(who, -1))
        flat, vals = real_entries(flat, values.gather(1, perm) * factor.gather(1, bins))
        self.sums.view(-1).index_add_(0, flat, vals)

    def merge(self, other: BinnedCredits | None) -> None:
        if other is None or other.edges != self.edges or other.sums.shape != self.sums.shape:
            raise AttributionError("cannot merge credits binned differently (bins and walk "
                                   "length must agree)")
        self.sums += other.sums.to(self.sums.device)

    def reset(self) -> None:
        self.sums.zero_()

    def shares(self, count: int, offset: torch.Tensor | None = None) -> torch.Tensor:
        """float32 (B, n*d): each bin's share of phi, ``sums / count`` (+ p_b * ``offset``,
        the control variate's exact mean, which does not depend on the step)."""
        out = self.sums / max(count, 1)
        if offset is not None:
            probs = torch.from_numpy(bin_probabilities(self.edges)).to(out.device)
            out = out + (probs[:, None] * offset.to(out.device)[None, :]).float()
        return out.float()
