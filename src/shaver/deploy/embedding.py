"""``CompressedEmbedding``: the artifact's compressed table as a torch module.

A drop-in for ``model.embedding`` that keeps the artifact's compact form in memory (packed
keep-masks, row pointers, kept values in their stored dtype, per-field scales, codebook)
and is written only in ops that ONNX exports as standard operators (Gather, BitwiseAnd,
CumSum, Where, Cast), so :mod:`shaver.deploy.onnx_export` exports it as is.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from shaver.errors import ArtifactError
from shaver.models.base import set_calibration
from shaver.runtime.model import Artifact, load_artifact


class CompressedEmbedding(nn.Module):
    """Compressed embedding table (n rows, d columns, m fields).

    Buffers: ``masks`` uint8 (n, ceil(d/8)) keep-bits (bit j = column j, LSB first);
    ``block_ptr`` int64 (ceil(n/256),) and ``in_block`` int16 (n,): a row's first stored
    value is ``block_ptr[r >> 8] + in_block[r]``; ``values`` (K + 1,) kept
    values (fp32, fp16 or int8; a trailing 0 for masked-out gathers); ``scales`` float32 (m,);
    ``codebook`` float32 (m, d); ``field_starts`` int64 (m - 1,): first row of fields 1..m-1.

    forward(x LongTensor (batch, fields) global ids) -> float32 (batch, fields, d): kept
    entries from ``values`` (times the field's scale), pruned ones from the codebook of the
    field the id belongs to.
    """

    def __init__(self, masks: np.ndarray, block_ptr: np.ndarray, in_block: np.ndarray,
                 values: np.ndarray,
                 scales: np.ndarray, codebook: np.ndarray, bounds: np.ndarray, dim: int):
        super().__init__()
        self.embedding_dim = int(dim)
        self.num_embeddings = int(masks.shape[0])
        self.field_dims = [int(v) for v in np.diff(bounds)]
        self.register_buffer("masks", torch.from_numpy(np.ascontiguousarray(masks)))
        self.register_buffer("block_ptr", torch.from_numpy(np.array(block_ptr, dtype=np.int64)))
        self.register_buffer("in_block", torch.from_numpy(np.array(in_block)))
        # One trailing 0 so that gathers at masked-out positions stay in bounds.
        padded = np.concatenate([values, np.zeros(1, values.dtype)])
        self.register_buffer("values", torch.from_numpy(padded))
        self.register_buffer("scales", torch.from_numpy(np.array(scales, dtype=np.float32)))
        self.register_buffer("codebook", torch.from_numpy(np.array(codebook, dtype=np.float32)))
        self.register_buffer("field_starts", torch.from_numpy(bounds[1:-1].astype(np.int64)))
        self.register_buffer("bit_values", torch.tensor([1 << i for i in range(8)],
                                                         dtype=torch.uint8))

    @classmethod
    def from_artifact(cls, artifact: Artifact | str | os.PathLike[str]) -> CompressedEmbedding:
        """Build from a loaded :class:`Artifact` or an artifact path."""
        art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        if art.tiered:
            raise ArtifactError(f"{art.path}: a tiered (format v2) table; build it with "
                                "compressed_model() or TieredCompressedEmbedding")
        t = art.tables
        return cls(t.masks, t.block_ptr, t.in_block, t.values, t.scales, t.codebook, t.bounds, t.dim)

    @property
    def weight(self) -> torch.Tensor:
        """(n, d) effective table (decompressed on demand; for inspection, not for lookups)."""
        rows = torch.arange(self.num_embeddings, device=self.masks.device)
        field = self._field(rows)
        return self._rows(rows, field)

    def _field(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(-1) >= self.field_starts).sum(-1)

    def _rows(self, x: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        nb = self.masks.shape[1]
        bytes_ = self.masks[x].unsqueeze(-1)                       # (..., nb, 1)
        bits = torch.bitwise_and(bytes_, self.bit_values) > 0      # (..., nb, 8)
        bits = bits.reshape(*x.shape, nb * 8)[..., :self.embedding_dim]
        start = (self.block_ptr[torch.div(x, 256, rounding_mode="floor")]
                 + self.in_block[x].to(torch.int64))
        pos = start.unsqueeze(-1) + torch.cumsum(bits.to(torch.int64), dim=-1) - 1
        pos = torch.where(bits, pos, torch.full_like(pos, self.values.shape[0] - 1))
        vals = self.values[pos].to(torch.float32) * self.scales[field].unsqueeze(-1)
        return torch.where(bits, vals, self.codebook[field])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: LongTensor (batch, fields) -> (batch, fields, d)."""
        return self._rows(x, self._field(x))

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, kept={self.values.shape[0] - 1}, "
                f"values={self.values.dtype}")


def compressed_model(artifact: Artifact | str | os.PathLike[str]) -> nn.Module:
    """The artifact's whole model in torch (eval mode) with a :class:`CompressedEmbedding`,
    and the artifact's calibration when it has one."""
    from shaver.models.registry import build_model

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
    if art.tiered:
        from shaver.deploy.tiered_embedding import TieredCompressedEmbedding

        model.embedding = TieredCompressedEmbedding(art.tables)
    else:
        model.embedding = CompressedEmbedding.from_artifact(art)
    if art.calibration is not None:
        set_calibration(model, *(float(v) for v in art.calibration))
    return model.eval()
