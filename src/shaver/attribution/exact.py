"""Exact Shapley values by enumerating every coalition: the test oracle for tiny games.

Players of one sample are its m*d active entries; the value of a coalition S is minus the
sample's loss with the entries outside S replaced by their placeholders. The dataset-level
value is the mean over samples (Shapley values are linear), credited to global entries.
"""

from __future__ import annotations

import itertools
import math

import torch

from shaver.attribution.estimator.common import bce, global_entries
from shaver.attribution.imputer import PlaceholderImputer
from shaver.errors import AttributionError

#: Largest game enumerated (2**12 coalitions per sample).
MAX_PLAYERS = 12


@torch.no_grad()
def exact_sample_shapley(imputer: PlaceholderImputer, x: torch.Tensor,
                         y: torch.Tensor) -> torch.Tensor:
    """x (B, m), y (B,) -> float64 (B, m*d): each sample's exact Shapley values, entry order.

    phi[b, j] = sum over S not containing j of |S|! (P-|S|-1)! / P! * (loss(S) - loss(S + j)),
    i.e. > 0 when removing entry j raises the loss. Requires m*d <= :data:`MAX_PLAYERS`.
    """
    players = imputer.num_players
    if players > MAX_PLAYERS:
        raise AttributionError(
            f"exact enumeration needs m*d <= {MAX_PLAYERS} players, got {players}")
    coalitions = torch.tensor(list(itertools.product([False, True], repeat=players)),
                              device=x.device)  # (2^P, P), True = kept
    batch = x.shape[0]
    loss = torch.empty(batch, len(coalitions), dtype=torch.float64, device=x.device)
    for c, keep in enumerate(coalitions):
        logits = imputer(x, keep.expand(batch, players))
        loss[:, c] = bce(logits, y).double()
    weights = [math.factorial(k) * math.factorial(players - k - 1) / math.factorial(players)
               for k in range(players)]
    sizes = coalitions.sum(1)
    bits = 1 << torch.arange(players - 1, -1, -1, device=x.device)
    index = (coalitions.long() * bits).sum(1)  # coalition -> its row (itertools order)
    phi = torch.zeros(batch, players, dtype=torch.float64, device=x.device)
    for j in range(players):
        without = ~coalitions[:, j]
        rows_s = index[without]
        rows_sj = rows_s + bits[j]
        w = torch.tensor([weights[int(k)] for k in sizes[without]], dtype=torch.float64,
                         device=x.device)
        phi[:, j] = ((loss[:, rows_s] - loss[:, rows_sj]) * w).sum(1)
    return phi


def exact_shapley(imputer: PlaceholderImputer, x: torch.Tensor, y: torch.Tensor,
                  num_features: int) -> torch.Tensor:
    """Dataset-level exact values: float64 (num_features, d), the mean over the B samples."""
    phi = exact_sample_shapley(imputer, x, y)
    d = imputer.embed_dim
    total = torch.zeros(num_features * d, dtype=torch.float64, device=x.device)
    total.index_add_(0, global_entries(x, d).reshape(-1), phi.reshape(-1))
    return (total / x.shape[0]).view(num_features, d)


@torch.no_grad()
def exact_sample_strata(imputer: PlaceholderImputer, x: torch.Tensor, y: torch.Tensor,
                        edges: list[int]) -> torch.Tensor:
    """x (B, m), y (B,) -> float64 (B, bins, m*d): each entry's exact mean marginal
    contribution over the coalitions of each bin of :mod:`shaver.attribution.binned`.

    Bin b holds the coalitions that keep c in [edges[b], edges[b+1]) entries, the entry itself
    included; the mean is uniform over c in the bin, then over the coalitions of size c - 1
    not containing the entry (the law of a uniform walk's step). Needs m*d <= MAX_PLAYERS.
    """
    players = imputer.num_players
    if players > MAX_PLAYERS:
        raise AttributionError(
            f"exact enumeration needs m*d <= {MAX_PLAYERS} players, got {players}")
    coalitions = torch.tensor(list(itertools.product([False, True], repeat=players)),
                              device=x.device)
    batch = x.shape[0]
    loss = torch.stack([bce(imputer(x, keep.expand(batch, players)), y).double()
                        for keep in coalitions], 1)
    sizes = coalitions.sum(1)
    bits = 1 << torch.arange(players - 1, -1, -1, device=x.device)
    index = (coalitions.long() * bits).sum(1)
    out = torch.zeros(batch, len(edges) - 1, players, dtype=torch.float64, device=x.device)
    for j in range(players):
        without = ~coalitions[:, j]
        gain = loss[:, index[without]] - loss[:, index[without] + bits[j]]  # (B, 2^(P-1))
        kept = sizes[without] + 1  # c: the coalition before removing j keeps j too
        for b in range(len(edges) - 1):
            cs = range(edges[b], edges[b + 1])
            per_c = [gain[:, kept == c].mean(1) for c in cs]
            out[:, b, j] = torch.stack(per_c, 1).mean(1)
    return out
