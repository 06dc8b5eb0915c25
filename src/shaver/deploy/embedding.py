"""``CompressedEmbedding``: an artifact's compressed table as a torch module.

A drop-in for ``model.embedding`` that keeps the artifact's compact form in memory, for a v1
or a v2 table alike (the runtime decodes both into tiers): per tier its keep-bits, row
pointers and value stream in the stored dtype (int4 / int2 stay packed, two or four codes
per byte, unpacked per lookup with integer division and remainder), per-field or per-row
scales, and the codebook. It is written only in ops that ONNX exports as standard operators
(Gather, BitwiseAnd, CumSum, Div, Mod, Where, Cast), so :mod:`shaver.deploy.onnx_export`
exports it as is.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from shaver.errors import ArtifactError
from shaver.models.base import set_calibration
from shaver.models.registry import build_model
from shaver.runtime.lowbit import half_range
from shaver.runtime.model import Artifact, load_artifact
from shaver.runtime.tiered import TieredTables, TierTables


class _Tier(nn.Module):
    def __init__(self, tier: TierTables):
        super().__init__()
        self.bits = tier.spec.bits
        self.kind = tier.spec.value_dtype
        self.row_scale = tier.spec.scale == "row"
        self.register_buffer("masks", torch.from_numpy(np.ascontiguousarray(tier.masks)))
        self.register_buffer("block_ptr", torch.from_numpy(np.array(tier.block_ptr, np.int64)))
        self.register_buffer("in_block", torch.from_numpy(np.array(tier.in_block)))
        stream = np.array(tier.values)
        padded = np.concatenate([stream, np.zeros(1, stream.dtype)])  # in-bounds gathers
        self.register_buffer("values", torch.from_numpy(padded))
        scales = tier.scales if tier.scales.size else np.ones(1, np.float32)
        self.register_buffer("scales", torch.from_numpy(np.array(scales, np.float32)))
        self.register_buffer("bit_values", torch.tensor([1 << i for i in range(8)],
                                                         dtype=torch.uint8))
        per = 8 // self.bits if self.bits < 8 else 1
        self.register_buffer("lane_div", torch.tensor([1 << (k * self.bits) for k in range(per)],
                                                      dtype=torch.int64))

    def forward(self, x: torch.Tensor, field: torch.Tensor, out: torch.Tensor,
                dim: int) -> torch.Tensor:
        nb = self.masks.shape[1]
        bits = torch.bitwise_and(self.masks[x].unsqueeze(-1), self.bit_values) > 0
        bits = bits.reshape(*x.shape, nb * 8)[..., :dim]
        start = (self.block_ptr[torch.div(x, 256, rounding_mode="floor")]
                 + self.in_block[x].to(torch.int64))
        pos = start.unsqueeze(-1) + torch.cumsum(bits.to(torch.int64), dim=-1) - 1
        pos = torch.where(bits, pos, torch.zeros_like(pos))
        vals = self._values(pos, x, field)
        return torch.where(bits, vals, out)

    def _values(self, pos: torch.Tensor, x: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        if self.kind in ("fp32", "fp16"):
            return self.values[pos].to(torch.float32)
        scale = (self.scales[x] if self.row_scale else self.scales[field]).unsqueeze(-1)
        if self.bits == 8:
            return self.values[pos].to(torch.float32) * scale
        per = 8 // self.bits
        byte = self.values[torch.div(pos, per, rounding_mode="floor")].to(torch.int64)
        lane = self.lane_div[torch.remainder(pos, per)]
        code = torch.remainder(torch.div(byte, lane, rounding_mode="floor"), 2 ** self.bits)
        return (code.to(torch.float32) - half_range(self.bits)) * scale


class CompressedEmbedding(nn.Module):
    """An artifact's table (v1 or v2: :func:`shaver.runtime.decode.decode_table`) as a torch
    module: forward(x LongTensor (batch, fields) global ids) -> float32 (batch, fields, d),
    an entry's value from the tier holding it, else its field's codebook value."""

    def __init__(self, tables: TieredTables):
        super().__init__()
        self.embedding_dim = int(tables.dim)
        self.num_embeddings = int(tables.bounds[-1])
        self.field_dims = [int(v) for v in np.diff(tables.bounds)]
        self.tiers = nn.ModuleList(_Tier(t) for t in tables.tiers)
        self.register_buffer("codebook", torch.from_numpy(np.array(tables.codebook, np.float32)))
        self.register_buffer("field_starts",
                             torch.from_numpy(tables.bounds[1:-1].astype(np.int64)))

    @classmethod
    def from_artifact(cls, artifact: Artifact | str | os.PathLike[str]) -> CompressedEmbedding:
        """Build from a loaded :class:`Artifact` or an artifact path."""
        art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        return cls(art.tables)

    @property
    def weight(self) -> torch.Tensor:
        """(n, d) effective table (decompressed on demand; for inspection)."""
        rows = torch.arange(self.num_embeddings, device=self.codebook.device)
        return self.forward(rows.unsqueeze(-1)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        field = (x.unsqueeze(-1) >= self.field_starts).sum(-1)
        out = self.codebook[field]
        for tier in self.tiers:
            out = tier(x, field, out, self.embedding_dim)
        return out


def compressed_model(artifact: Artifact | str | os.PathLike[str]) -> nn.Module:
    """The artifact's whole model in torch (eval mode) with a :class:`CompressedEmbedding`,
    and the artifact's calibration when it has one."""
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    model = build_model(dict(art.config)).eval()
    state: dict[str, Any] = {k: torch.from_numpy(np.array(v)) for k, v in art.head_tensors.items()}
    state.update({k: torch.from_numpy(np.array(v, dtype=np.float32))
                  for k, v in art.first_order.items()})
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("embedding.")]
    if missing or unexpected:
        raise ArtifactError(f"{art.path}: head tensors do not match model "
                            f"{art.config.get('name')!r} (missing {missing}, unexpected "
                            f"{unexpected})")
    model.embedding = CompressedEmbedding(art.tables)
    if art.calibration is not None:
        set_calibration(model, *(float(v) for v in art.calibration))
    return model.eval()
