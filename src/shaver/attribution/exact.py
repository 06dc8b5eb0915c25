"""Exact Shapley values by enumerating every coalition: the test oracle for tiny games.

Players of one sample are its active entries; the value of a coalition S is minus the
sample's loss with the entries outside S replaced by their placeholders. The dataset-level
value is the mean over samples (Shapley values are linear), credited to global entries.

Without bags a sample's players are its m*d entries (slot * d + column, every one real).
With bags (:mod:`shaver.attribution.imputer`'s game) they are the sample's REAL players
only, :meth:`~shaver.attribution.imputer.PlaceholderImputer.real_players`: the distinct
entries it looks up with a non-zero pooling coefficient (the leaders of the non-null slots,
times d columns). Pads, a repeated id's later copies and weight-0 values are no players: the
enumeration keeps them as they are (a follower still goes with its leader) and they get 0.
The number of real players differs from row to row, so bag rows are enumerated one by one.
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


def _coalitions(players: int, device: torch.device) -> torch.Tensor:
    """bool (2^P, P), True = kept, in itertools.product order (row = the bits, first player
    most significant)."""
    return torch.tensor(list(itertools.product([False, True], repeat=players)),
                        dtype=torch.bool, device=device).reshape(2 ** players, players)


def _shapley_from_losses(loss: torch.Tensor, coalitions: torch.Tensor) -> torch.Tensor:
    """loss float64 (B, 2^P) of every coalition of :func:`_coalitions` -> phi (B, P):
    sum over S not containing j of |S|! (P-|S|-1)! / P! * (loss(S) - loss(S + j))."""
    players = coalitions.shape[1]
    device = loss.device
    weights = [math.factorial(k) * math.factorial(players - k - 1) / math.factorial(players)
               for k in range(players)]
    sizes = coalitions.sum(1)
    bits = 1 << torch.arange(players - 1, -1, -1, device=device)
    index = (coalitions.long() * bits).sum(1)  # coalition -> its row (itertools order)
    phi = torch.zeros(loss.shape[0], players, dtype=torch.float64, device=device)
    for j in range(players):
        without = ~coalitions[:, j]
        rows_s = index[without]
        rows_sj = rows_s + bits[j]
        w = torch.tensor([weights[int(k)] for k in sizes[without]], dtype=torch.float64,
                         device=device)
        phi[:, j] = ((loss[:, rows_s] - loss[:, rows_sj]) * w).sum(1)
    return phi


def _check_size(players: int, what: str) -> None:
    if players > MAX_PLAYERS:
        raise AttributionError(f"exact enumeration needs {what} <= {MAX_PLAYERS} players, "
                               f"got {players}")


def _real_player_lists(imputer: PlaceholderImputer, x: torch.Tensor,
                       w: torch.Tensor | None) -> list[torch.Tensor]:
    """Per sample, the positions (slot * d + column) of its real players; refuses a game
    larger than :data:`MAX_PLAYERS` naming the sample and its count."""
    real = imputer.real_players(x, w)
    lists = [row.nonzero().reshape(-1) for row in real]
    for b, players in enumerate(lists):
        if len(players) > MAX_PLAYERS:
            raise AttributionError(
                f"exact enumeration needs <= {MAX_PLAYERS} real players per sample, sample "
                f"{b} has {len(players)} (distinct looked-up entries with a non-zero pooling "
                f"coefficient, x {imputer.embed_dim} columns)")
    return lists


@torch.no_grad()
def _exact_bag_rows(imputer: PlaceholderImputer, x: torch.Tensor, y: torch.Tensor,
                    w: torch.Tensor | None) -> torch.Tensor:
    """The bag game of :func:`exact_sample_shapley`, one row at a time."""
    lists = _real_player_lists(imputer, x, w)
    phi = torch.zeros(x.shape[0], imputer.num_players, dtype=torch.float64, device=x.device)
    for b, positions in enumerate(lists):
        players = len(positions)
        if players == 0:
            continue  # nothing the row looks up can change its loss
        coalitions = _coalitions(players, x.device)
        rows = len(coalitions)
        keep = torch.ones(rows, imputer.num_players, dtype=torch.bool, device=x.device)
        keep[:, positions] = coalitions  # null players stay as they are
        xb = x[b:b + 1].expand(rows, -1)
        wb = None if w is None else w[b:b + 1].expand(rows, -1)
        loss = bce(imputer(xb, keep, wb), y[b:b + 1].expand(rows)).double()
        phi[b, positions] = _shapley_from_losses(loss[None], coalitions)[0]
    return phi


@torch.no_grad()
def exact_sample_shapley(imputer: PlaceholderImputer, x: torch.Tensor, y: torch.Tensor,
                         w: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, slots), y (B,), w bag weights or None -> float64 (B, slots*d): each sample's
    exact Shapley values, in player (slot * d + column) order.

    phi[b, j] = sum over S not containing j of |S|! (P-|S|-1)! / P! * (loss(S) - loss(S + j)),
    i.e. > 0 when removing entry j raises the loss. Without bags P = m*d, which must be
    <= :data:`MAX_PLAYERS`; with bags P is each sample's number of real players (module
    docstring), each <= :data:`MAX_PLAYERS`, and every other position gets exactly 0.
    """
    if imputer.has_bags:
        return _exact_bag_rows(imputer, x, y, w)
    players = imputer.num_players
    _check_size(players, "m*d")
    coalitions = _coalitions(players, x.device)
    batch = x.shape[0]
    loss = torch.empty(batch, len(coalitions), dtype=torch.float64, device=x.device)
    for c, keep in enumerate(coalitions):
        logits = imputer(x, keep.expand(batch, players))
        loss[:, c] = bce(logits, y).double()
    return _shapley_from_losses(loss, coalitions)


def exact_shapley(imputer: PlaceholderImputer, x: torch.Tensor, y: torch.Tensor,
                  num_features: int, w: torch.Tensor | None = None) -> torch.Tensor:
    """Dataset-level exact values: float64 (num_features, d), the mean over the B samples
    (positions of pads and of a repeated id's later copies credit no entry)."""
    phi = exact_sample_shapley(imputer, x, y, w)
    d = imputer.embed_dim
    entries = global_entries(x, d).reshape(-1)
    values = phi.reshape(-1)
    keep = entries >= 0
    total = torch.zeros(num_features * d, dtype=torch.float64, device=x.device)
    total.index_add_(0, entries[keep], values[keep])
    return (total / x.shape[0]).view(num_features, d)


@torch.no_grad()
def exact_sample_strata(imputer: PlaceholderImputer, x: torch.Tensor, y: torch.Tensor,
                        edges: list[int]) -> torch.Tensor:
    """x (B, m), y (B,) -> float64 (B, bins, m*d): each entry's exact mean marginal
    contribution over the coalitions of each bin of :mod:`shaver.attribution.binned`.

    Bin b holds the coalitions that keep c in [edges[b], edges[b+1]) entries, the entry itself
    included; the mean is uniform over c in the bin, then over the coalitions of size c - 1
    not containing the entry (the law of a uniform walk's step). Needs m*d <= MAX_PLAYERS and
    a model without bags.
    """
    if imputer.has_bags:
        raise AttributionError("exact strata are defined for single-valued fields only (the "
                               "model has bags); use exact_sample_shapley")
    players = imputer.num_players
    _check_size(players, "m*d")
    coalitions = _coalitions(players, x.device)
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
