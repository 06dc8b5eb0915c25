"""The masked embedding: a drop-in for ``model.embedding`` after pruning.

Kept entries come from the original table, pruned entries from a per-field placeholder
(the field-aware codebook, or zeros for the "zero" variant). The keep-mask lives in memory as
a bool buffer; on disk it is always packed to bits (:func:`pack_mask`), never one byte per
entry.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from shaver.errors import ModelError
from shaver.models.base import copy_without_embedding


def pack_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray:
    """Bool mask (n, d) -> uint8 (ceil(n*d/8),): bits of the row-major flattened mask.

    Bit ``i % 8`` (least significant first, ``bitorder="little"``) of byte ``i // 8`` holds
    entry ``i`` of ``mask.reshape(-1)``; padding bits of the last byte are 0.
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ModelError(f"pack_mask expects a bool mask, got dtype {mask.dtype}")
    return np.packbits(mask.reshape(-1), bitorder="little")


def unpack_mask(packed: np.ndarray | torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`pack_mask`: uint8 bits -> bool mask of ``shape`` (n, d)."""
    if isinstance(packed, torch.Tensor):
        packed = packed.detach().cpu().numpy()
    packed = np.asarray(packed)
    shape = tuple(int(s) for s in shape)
    count = int(np.prod(shape))
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise ModelError(f"a packed mask is a 1-D uint8 array, got {packed.dtype} {packed.shape}")
    if packed.size != (count + 7) // 8:
        raise ModelError(
            f"packed mask has {packed.size} bytes, but a mask of shape {shape} needs "
            f"{(count + 7) // 8}"
        )
    bits = np.unpackbits(packed, count=count, bitorder="little")
    return bits.astype(np.bool_).reshape(shape)


def row_field_of(field_dims: Sequence[int]) -> torch.Tensor:
    """LongTensor (n,): the field of each global row."""
    dims = torch.as_tensor([int(d) for d in field_dims], dtype=torch.long)
    return torch.repeat_interleave(torch.arange(len(dims)), dims)


class MaskedEmbedding(nn.Module):
    """Embedding whose pruned entries read a per-field placeholder.

    Args:
        weight: (n, d) original table; only the kept entries are retained (pruned -> 0).
        mask: bool (n, d), True = kept.
        codebook: (m, d) placeholder of each field (zeros for the "zero" variant).
        field_dims: rows per field; ``sum(field_dims) == n``.

    ``forward(x)``: x LongTensor (batch, fields) of global ids -> (batch, fields, d) =
    ``where(mask[x], weight[x], codebook[row_field[x]])``. Gradients reach only kept entries
    of ``weight``; the codebook is a buffer, not a parameter.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor | np.ndarray,
        codebook: torch.Tensor,
        field_dims: Sequence[int],
    ):
        super().__init__()
        weight = weight.detach()
        mask = torch.as_tensor(mask, device=weight.device)
        codebook = torch.as_tensor(codebook).detach().to(device=weight.device, dtype=weight.dtype)
        self.field_dims = [int(d) for d in field_dims]
        n, d = weight.shape if weight.dim() == 2 else (None, None)
        if n is None or n != sum(self.field_dims):
            raise ModelError(
                f"MaskedEmbedding: weight has shape {tuple(weight.shape)}, expected "
                f"({sum(self.field_dims)}, d) for field_dims summing to {sum(self.field_dims)}"
            )
        if mask.dtype != torch.bool or tuple(mask.shape) != (n, d):
            raise ModelError(
                f"MaskedEmbedding: mask must be bool of shape {(n, d)}, got "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        if tuple(codebook.shape) != (len(self.field_dims), d):
            raise ModelError(
                f"MaskedEmbedding: codebook has shape {tuple(codebook.shape)}, expected "
                f"({len(self.field_dims)}, {d}) (fields x dim)"
            )
        self.num_embeddings, self.embedding_dim = int(n), int(d)
        self.weight = nn.Parameter(torch.where(mask, weight, torch.zeros((), dtype=weight.dtype,
                                                                         device=weight.device)))
        self.register_buffer("mask", mask.clone())
        self.register_buffer("codebook", codebook.clone())
        self.register_buffer("row_field", row_field_of(self.field_dims).to(weight.device),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: LongTensor (batch, fields) -> (batch, fields, d)."""
        kept = self.mask[x]
        placeholder = self.codebook[self.row_field[x]]
        return torch.where(kept, self.weight[x], placeholder)

    def effective_weight(self) -> torch.Tensor:
        """(n, d): the table the model actually sees (kept values, placeholders elsewhere)."""
        return torch.where(self.mask, self.weight, self.codebook[self.row_field])

    @property
    def kept(self) -> int:
        """Number of kept entries."""
        return int(self.mask.sum())

    def extra_repr(self) -> str:
        total = self.num_embeddings * self.embedding_dim
        return (f"{self.num_embeddings}, {self.embedding_dim}, kept={self.kept}/{total}, "
                f"fields={len(self.field_dims)}")


def masked_copy(model: nn.Module, mask: np.ndarray, codebook: torch.Tensor) -> nn.Module:
    """A copy of ``model`` (eval mode) whose embedding is a MaskedEmbedding; the big table is
    not deep-copied (only its kept entries are copied into the new module)."""
    emb = model.embedding
    clone = copy_without_embedding(model)
    weight = emb.weight.detach()
    clone.embedding = MaskedEmbedding(weight, torch.from_numpy(mask).to(weight.device),
                                      codebook.to(weight.device), model.field_dims)
    return clone.eval()
