"""The placeholder imputer: what the model predicts when only the entries in S are kept.

As in SAGE (iancovert/sage ``imputers.py``), the question "what does the model predict with
only the players in S?" lives here, and the estimators only ask it. Players of one sample are
its m*d active embedding entries, numbered ``j = field * d + column``; an entry outside S
takes its field's placeholder value (the codebook row, or 0 for the zero variant).
"""

from __future__ import annotations

import torch
from torch import nn


class PlaceholderImputer:
    """Replace dropped entries of the embedding block by a per-field placeholder.

    model: a shaver model (``embedding``, ``head``); placeholder: (m, d) float tensor.
    """

    def __init__(self, model: nn.Module, placeholder: torch.Tensor):
        self.model = model
        weight = model.embedding.weight
        self.placeholder = placeholder.to(weight.device, torch.float32)
        self.num_fields = int(self.placeholder.shape[0])
        self.embed_dim = int(self.placeholder.shape[1])

    @property
    def num_players(self) -> int:
        """m * d: active entries of one sample."""
        return self.num_fields * self.embed_dim

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: LongTensor (batch, m) -> (emb, base), both float32 (batch, m, d).

        ``emb`` holds the model's embedding of x, ``base`` the placeholder of each position.
        """
        emb = self.model.embedding(x).to(torch.float32)
        base = self.placeholder.unsqueeze(0).expand(x.shape[0], -1, -1)
        return emb, base

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x: LongTensor (batch, m); keep: bool (batch, m*d), True = entry kept -> logits (batch,)."""
        emb, base = self.embed(x)
        mixed = torch.where(keep.view_as(emb), emb, base)
        return self.model.head(mixed, x).reshape(-1).float()
