"""DeepFM (Guo et al. 2017): first-order weights + FM + an MLP over the embedding block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shaver.models.base import CTRModel
from shaver.models.layers import MLP, FactorizationMachine, FeaturesLinear


class DeepFM(CTRModel):
    """logit = linear(x) + FM(emb) + MLP(emb.flatten(1)).

    ``model.linear``: first-order weights (``linear.weight``: ``nn.Embedding(n, 1)``, plus
    ``linear.bias``); ``model.mlp``: Linear/BatchNorm1d/ReLU/Dropout blocks, final Linear to 1.
    """

    name = "deepfm"

    def __init__(
        self,
        field_dims: Sequence[int],
        embed_dim: int = 16,
        mlp_dims: Sequence[int] = (400, 400, 400),
        dropout: float = 0.2,
        batch_norm: bool = True,
        layout: Sequence[dict[str, Any]] | None = None,
    ):
        super().__init__(field_dims, embed_dim, layout)
        nn.init.xavier_uniform_(self.embedding.weight)
        self.linear = FeaturesLinear(self.num_features)
        self.fm = FactorizationMachine()
        self.mlp = MLP(self.num_fields * self.embed_dim, mlp_dims, dropout, batch_norm=batch_norm)
        self.mlp_dims = [int(s) for s in mlp_dims]
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)

    def head(self, emb: torch.Tensor, x: torch.Tensor,
             w: torch.Tensor | None = None) -> torch.Tensor:
        """emb: (batch, slots, d), x: LongTensor (batch, slots), w: bag weights or None ->
        logits (batch,)."""
        emb, coef = self.pooled(emb, x, w)
        return self.linear(x, coef) + self.fm(emb) + self.mlp(emb.flatten(1)).squeeze(1)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "mlp_dims": self.mlp_dims, "dropout": self.dropout,
                "batch_norm": self.batch_norm}
