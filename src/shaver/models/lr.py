"""Logistic regression: the sanity baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shaver.models.base import CTRModel


class LogisticRegression(CTRModel):
    """logit = bias + sum over fields and columns of the embedding block.

    The embedding table *is* the weight vector (``embed_dim=1`` by default: one weight per id),
    so attribution and pruning act on LR's weights like on any other model's embeddings.
    """

    name = "lr"

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 1,
                 layout: Sequence[dict[str, Any]] | None = None):
        super().__init__(field_dims, embed_dim, layout)
        nn.init.zeros_(self.embedding.weight)
        self.bias = nn.Parameter(torch.zeros(1))

    def head(self, emb: torch.Tensor, x: torch.Tensor,
             w: torch.Tensor | None = None) -> torch.Tensor:
        """emb: (batch, slots, d), x: (batch, slots) (bags' pads), w: bag weights or None ->
        logits (batch,)."""
        emb, _ = self.pooled(emb, x, w)
        return emb.sum(dim=(1, 2)) + self.bias
