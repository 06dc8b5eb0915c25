"""Factorization machine (Rendle 2010): first-order weights + pairwise interactions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shaver.models.base import CTRModel
from shaver.models.layers import FactorizationMachine, FeaturesLinear


class FM(CTRModel):
    """logit = linear(x) + sum_{i<j} <e_i, e_j>."""

    name = "fm"

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16):
        super().__init__(field_dims, embed_dim)
        nn.init.xavier_uniform_(self.embedding.weight)
        self.linear = FeaturesLinear(self.num_features)
        self.fm = FactorizationMachine()

    def head(self, emb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """emb: (batch, fields, d), x: LongTensor (batch, fields) -> logits (batch,)."""
        return self.linear(x) + self.fm(emb)
