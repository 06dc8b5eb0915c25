"""Shared helpers of the walk paths (:mod:`.paths`, :mod:`.paths_dcn`): the path protocol
and the per-step quantities every path builds its states from.

A path sees a walk over SLOT entries (player j = slot * d + column) but the head sees the
POOLED block (field f, column k): removing slot entry (s, k) moves pooled position
(field(s), k) by ``coef[s] * (placeholder - value)`` (:mod:`shaver.attribution.imputer`).
Several slots of one bag map to the same pooled position. :class:`PooledWalk` is that
translation; without bags (``coef`` None) slots are fields and it is the identity.
"""

from __future__ import annotations

from typing import Protocol

import torch

from shaver.attribution.slots import tie


class WalkPath(Protocol):
    name: str

    def walk_logits(self, x: torch.Tensor, emb: torch.Tensor, base: torch.Tensor,
                    perm: torch.Tensor, coef: torch.Tensor | None = None,
                    w: torch.Tensor | None = None) -> torch.Tensor: ...


def walk_deltas(emb: torch.Tensor, base: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """(b, K): change of the entry removed at each step (placeholder - value), step order."""
    return (base - emb).reshape(emb.shape[0], -1).gather(1, perm)


def walk_ranks(perm: torch.Tensor, players: int) -> torch.Tensor:
    """(b, P): the step at which each entry is removed; P (never) for entries a truncated
    walk does not reach."""
    rank = torch.full((perm.shape[0], players), players, dtype=perm.dtype, device=perm.device)
    steps = torch.arange(perm.shape[1], device=perm.device).expand_as(perm)
    return rank.scatter_(1, perm, steps)


def walk_states(emb: torch.Tensor, base: torch.Tensor, perm: torch.Tensor,
                x: torch.Tensor | None = None) -> torch.Tensor:
    """(b, K+1, P) slot-level states of the walk: state t has the first t entries of
    ``perm`` replaced by their placeholders. With the rows ``x`` (models with bags), a
    repeated id's later copies are replaced with their first slot
    (:mod:`shaver.attribution.slots`)."""
    b = emb.shape[0]
    players = emb.shape[1] * emb.shape[2]
    rank = walk_ranks(perm, players)
    if x is not None:
        rank = tie(rank, x)
    steps = torch.arange(perm.shape[1] + 1, device=perm.device).view(1, -1, 1)
    return torch.where(rank.unsqueeze(1) < steps, base.reshape(b, 1, players),
                       emb.reshape(b, 1, players))


def prefix_sums(start: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """start (b, *s), steps (b, P, *s) -> (b, P + 1, *s): start, start + steps[0], ..."""
    out = torch.empty(steps.shape[0], steps.shape[1] + 1, *steps.shape[2:],
                      dtype=steps.dtype, device=steps.device)
    out[:, 0] = start
    torch.cumsum(steps, dim=1, out=out[:, 1:])
    out[:, 1:] += start.unsqueeze(1)
    return out


class PooledWalk:
    """A slot-level walk seen at the pooled positions the head reads.

    ``start`` (b, fields, d) float32: the pooled block of the full coalition; ``pos`` (b, K):
    the pooled position ``field * d + column`` changed at step t; ``delta`` (b, K) float32:
    its change. ``pooling``: the model's :class:`~shaver.models.pooling.Pooling` (None
    without bags, where ``start = emb``, ``pos = perm``, ``delta = placeholder - value``).
    """

    def __init__(self, emb: torch.Tensor, base: torch.Tensor, perm: torch.Tensor,
                 coef: torch.Tensor | None = None, pooling: torch.nn.Module | None = None,
                 slot_field: torch.Tensor | None = None):
        self.emb, self.base, self.perm, self.coef = emb, base, perm, coef
        d = emb.shape[2]
        self.delta = walk_deltas(emb, base, perm)
        if coef is None:
            self.start, self.pos = emb, perm
        else:
            self.start = pooling(emb, coef)
            slot = torch.div(perm, d, rounding_mode="floor")
            self.delta = self.delta * coef.gather(1, slot)
            self.pos = slot_field.to(perm.device)[slot] * d + perm % d

    def square_steps(self) -> torch.Tensor:
        """float64 (b, K): change of the pooled block's sum of squares at each step."""
        b = self.emb.shape[0]
        if self.coef is None:
            e64 = self.emb.double()
            return (self.base.double() ** 2 - e64 ** 2).reshape(b, -1).gather(1, self.perm)
        before = self.start.double().reshape(b, -1).gather(1, self.pos) + self._earlier()
        d64 = self.delta.double()
        return d64 * (2.0 * before + d64)

    def _earlier(self) -> torch.Tensor:
        """float64 (b, K): sum of the deltas of EARLIER steps at the same pooled position
        (a segmented exclusive prefix sum over steps grouped by position)."""
        order = torch.argsort(self.pos, dim=1, stable=True)  # by position, then by step
        pos, delta = self.pos.gather(1, order), self.delta.double().gather(1, order)
        total = delta.cumsum(1) - delta  # exclusive, over the whole sorted row
        index = torch.arange(pos.shape[1], device=pos.device).expand_as(pos)
        first = torch.ones_like(pos, dtype=torch.bool)
        first[:, 1:] = pos[:, 1:] != pos[:, :-1]
        head = torch.where(first, index, torch.zeros_like(index)).cummax(1).values
        return torch.empty_like(total).scatter_(1, order, total - total.gather(1, head))
