"""Factorization machine (Rendle 2010): first-order weights + pairwise interactions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shaver.models.base import CTRModel
from shaver.models.layers import FactorizationMachine, FeaturesLinear


class FM(CTRModel):
    """logit = linear(x) + sum_{i<j} <e_i, e_j>."""

    name = "fm"

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16,
                 layout: Sequence[dict[str, Any]] | None = None):
        super().__init__(field_dims, embed_dim, layout)
        nn.init.xavier_uniform_(self.embedding.weight)
        self.linear = FeaturesLinear(self.num_features)
        self.fm = FactorizationMachine()

    def head(self, emb: torch.Tensor, x: torch.Tensor,
             w: torch.Tensor | None = None) -> torch.Tensor:
        """emb: (batch, slots, d), x: LongTensor (batch, slots), w: bag weights or None ->
        logits (batch,)."""
        emb, coef = self.pooled(emb, x, w)
        return self.linear(x, coef) + self.fm(emb)
