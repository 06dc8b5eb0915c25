"""Shared helpers of the walk paths (:mod:`.paths`, :mod:`.paths_dcn`): the path protocol
and the per-step quantities every path builds its states from."""

from __future__ import annotations

from typing import Protocol

import torch


class WalkPath(Protocol):
    name: str

    def walk_logits(self, x: torch.Tensor, emb: torch.Tensor, base: torch.Tensor,
                    perm: torch.Tensor) -> torch.Tensor: ...


def walk_deltas(emb: torch.Tensor, base: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """(b, P): change of the entry removed at each step (placeholder - value), step order."""
    return (base - emb).reshape(emb.shape[0], -1).gather(1, perm)


def walk_ranks(perm: torch.Tensor, players: int) -> torch.Tensor:
    """(b, P): the step at which each entry is removed; P (never) for entries a truncated
    walk does not reach."""
    rank = torch.full((perm.shape[0], players), players, dtype=perm.dtype, device=perm.device)
    steps = torch.arange(perm.shape[1], device=perm.device).expand_as(perm)
    return rank.scatter_(1, perm, steps)


def prefix_sums(start: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """start (b, *s), steps (b, P, *s) -> (b, P + 1, *s): start, start + steps[0], ..."""
    out = torch.empty(steps.shape[0], steps.shape[1] + 1, *steps.shape[2:],
                      dtype=steps.dtype, device=steps.device)
    out[:, 0] = start
    torch.cumsum(steps, dim=1, out=out[:, 1:])
    out[:, 1:] += start.unsqueeze(1)
    return out
