"""Shared pieces of the engines: loss, credits, precision (the factory is :mod:`.factory`)."""

from __future__ import annotations

import contextlib
from typing import Protocol

import torch
from torch.nn import functional as F

from shaver.attribution.slots import followers
from shaver.errors import AttributionError

DTYPES = ("auto", "fp32", "bf16", "int8")
ENGINES = ("fast", "reference")


class Engine(Protocol):
    name: str

    def losses(self, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor,
               w: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, slots) global ids, y (B,), perm (B, K <= slots*d), w bag weights or None
        -> per-sample losses (B, K + 1)."""
        ...


def bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample binary cross-entropy of sigmoid(logits) against y, in float32."""
    return F.binary_cross_entropy_with_logits(logits.float(), y.float().expand_as(logits),
                                              reduction="none")


def precision(dtype: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast context for the head: bf16 matmuls when ``dtype == "bf16"``.

    (int8 is not an autocast: the fast engine's paths swap in int8 layers themselves.)
    """
    if dtype not in DTYPES:
        raise AttributionError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype in ("auto", "fp32", "int8"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def entry_credits(losses: torch.Tensor, perm: torch.Tensor,
                  players: int | None = None) -> torch.Tensor:
    """losses (B, K+1) along the walk, perm (B, K) -> credits (B, P) in ENTRY order.

    credit[b, j] = loss after removing entry j - loss before (> 0: entry j was useful). A
    truncated walk (K < ``players`` = P; :func:`~shaver.attribution.permutations.real_first`)
    leaves the players it does not reach (null players) at exactly 0.
    """
    steps = losses[:, 1:] - losses[:, :-1]
    players = perm.shape[1] if players is None else int(players)
    if players == perm.shape[1]:
        return torch.empty_like(steps).scatter_(1, perm, steps)
    out = torch.zeros(steps.shape[0], players, dtype=steps.dtype, device=steps.device)
    return out.scatter_(1, perm, steps)


def global_entries(x: torch.Tensor, embed_dim: int) -> torch.Tensor:
    """x (B, slots) global ids -> LongTensor (B, slots*d): flat index row*d + column of each
    player; -1 for the players of a pad slot and of a repeated id's later copies (no entry
    of their own, :mod:`shaver.attribution.slots`: accumulators skip them)."""
    cols = torch.arange(embed_dim, device=x.device)
    flat = (x.unsqueeze(2) * embed_dim + cols).reshape(x.shape[0], -1)
    none = (x < 0) | followers(x)
    if bool(none.any()):
        flat = flat.masked_fill(none.repeat_interleave(embed_dim, dim=1), -1)
    return flat


def real_entries(entries: torch.Tensor, values: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened (entries, values) without the players of pads (entry -1), for an
    accumulator's ``index_add_`` (a sample's pads credit no entry)."""
    flat, vals = entries.reshape(-1), values.reshape(-1)
    keep = flat >= 0
    if bool(keep.all()):
        return flat, vals
    return flat[keep], vals[keep]
