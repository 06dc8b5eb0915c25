"""Shared pieces of the engines: loss, credits, precision (the factory is :mod:`.factory`)."""

from __future__ import annotations

import contextlib
from typing import Protocol

import torch
from torch.nn import functional as F

from shaver.errors import AttributionError

DTYPES = ("auto", "fp32", "bf16", "int8")
ENGINES = ("fast", "reference")


class Engine(Protocol):
    name: str

    def losses(self, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """x (B, m), y (B,), perm (B, m*d) -> per-sample losses (B, m*d + 1)."""
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


def entry_credits(losses: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """losses (B, P+1) along the walk, perm (B, P) -> credits (B, P) in ENTRY order.

    credit[b, j] = loss after removing entry j - loss before (> 0: entry j was useful).
    """
    steps = losses[:, 1:] - losses[:, :-1]
    return torch.empty_like(steps).scatter_(1, perm, steps)


def global_entries(x: torch.Tensor, embed_dim: int) -> torch.Tensor:
    """x (B, m) global ids -> LongTensor (B, m*d): flat index row*d + column of each player."""
    cols = torch.arange(embed_dim, device=x.device)
    return (x.unsqueeze(2) * embed_dim + cols).reshape(x.shape[0], -1)
