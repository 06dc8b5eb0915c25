"""DCN-V2 (Wang et al. 2021): full-rank cross layers, and DCN-Mix (mixture of low-rank experts).

Both take the flattened embedding block x0 (batch, fields * d) and combine the cross network
with an MLP, ``stacked`` (cross -> MLP -> Linear) or ``parallel`` (cross || MLP -> Linear).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shaver.errors import ModelError
from shaver.models.base import CTRModel
from shaver.models.layers import MLP, CrossNetworkMix, CrossNetworkV2

STRUCTURES = ("stacked", "parallel")


class _CrossModel(CTRModel):
    """Shared wiring of DCN-V2 and DCN-Mix around a cross network built by ``_cross``."""

    def __init__(self, field_dims: Sequence[int], embed_dim: int, cross_layers: int,
                 mlp_dims: Sequence[int], dropout: float, structure: str,
                 layout: Sequence[dict[str, Any]] | None = None):
        super().__init__(field_dims, embed_dim, layout)
        if structure not in STRUCTURES:
            raise ModelError(f"structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")
        nn.init.xavier_uniform_(self.embedding.weight)
        dim = self.num_fields * self.embed_dim
        self.cross = self._cross(dim, int(cross_layers))
        self.mlp = MLP(dim, mlp_dims, dropout, output_layer=False)
        out_dim = self.mlp.output_dim + (dim if structure == "parallel" else 0)
        self.out = nn.Linear(out_dim, 1)
        self.cross_layers = int(cross_layers)
        self.mlp_dims = [int(s) for s in mlp_dims]
        self.dropout = float(dropout)
        self.structure = structure

    def _cross(self, dim: int, layers: int) -> nn.Module:
        raise NotImplementedError

    def head(self, emb: torch.Tensor, x: torch.Tensor,
             w: torch.Tensor | None = None) -> torch.Tensor:
        """emb: (batch, slots, d), x: (batch, slots) (bags' pads), w: bag weights or None ->
        logits (batch,)."""
        emb, _ = self.pooled(emb, x, w)
        x0 = emb.flatten(1)
        if self.structure == "stacked":
            h = self.mlp(self.cross(x0))
        else:
            h = torch.cat([self.cross(x0), self.mlp(x0)], dim=1)
        return self.out(h).squeeze(1)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "cross_layers": self.cross_layers, "mlp_dims": self.mlp_dims,
                "dropout": self.dropout, "structure": self.structure}


class DCNV2(_CrossModel):
    """DCN-V2 with full-rank cross layers (``cross_layers`` of them)."""

    name = "dcn-v2"

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, cross_layers: int = 3,
                 mlp_dims: Sequence[int] = (400, 400, 400), dropout: float = 0.2,
                 structure: str = "stacked", layout: Sequence[dict[str, Any]] | None = None):
        super().__init__(field_dims, embed_dim, cross_layers, mlp_dims, dropout, structure,
                         layout)

    def _cross(self, dim: int, layers: int) -> nn.Module:
        return CrossNetworkV2(dim, layers)


class DCNMix(_CrossModel):
    """DCN-Mix: cross layers as a gated mixture of ``num_experts`` rank-``rank`` experts
    (``gate``: "softmax" as in DCN-V2, or "identity" as in the Shaver authors' code)."""

    name = "dcn-mix"

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, cross_layers: int = 3,
                 num_experts: int = 4, rank: int = 64,
                 mlp_dims: Sequence[int] = (400, 400, 400), dropout: float = 0.2,
                 structure: str = "stacked", gate: str = "softmax",
                 layout: Sequence[dict[str, Any]] | None = None):
        self.num_experts = int(num_experts)
        self.rank = int(rank)
        self.gate = gate
        super().__init__(field_dims, embed_dim, cross_layers, mlp_dims, dropout, structure,
                         layout)

    def _cross(self, dim: int, layers: int) -> nn.Module:
        return CrossNetworkMix(dim, layers, self.num_experts, self.rank, self.gate)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "num_experts": self.num_experts, "rank": self.rank,
                "gate": self.gate}
