"""Post-training quantisation of the embedding table: a baseline on the same bytes axis.

Symmetric absmax quantisation: ``q = clamp(round(w / s), -qmax, qmax)``, ``qmax = 2**(b-1) - 1``,
with one fp32 scale ``s = max|w| / qmax`` per row (``granularity="row"``) or for the whole
table (``"table"``). The model sees the dequantised table ``q * s``.

How bytes are counted (:func:`quantized_artifact_bytes`): the artifact
``shaver.table.size.predict_artifact_bytes`` gives for the unpruned model (all entries kept,
fp32, every field dense), minus its fp32 embedding values (n*d*4) and its codebook (m*d*4,
which a quantised table does not need), plus the packed quantised values
``ceil(n*d*bits/8)`` (int4: two per byte) and the fp32 scales (4 per row, or 4). So the head,
first-order weights, container header, section headers and metadata are counted exactly as for
pruned models; the quantised values are counted as if stored in one dense section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from shaver.errors import ShaverError

BITS: tuple[int, ...] = (16, 8, 4)
GRANULARITIES: tuple[str, ...] = ("row", "table")


@dataclass(frozen=True)
class QuantizeConfig:
    """``bits`` in (16, 8, 4); ``granularity`` "row" (a scale per row) or "table" (one)."""

    bits: int = 8
    granularity: Literal["row", "table"] = "row"

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ShaverError(f"quantisation bits must be one of {BITS}, got {self.bits!r}")
        if self.granularity not in GRANULARITIES:
            raise ShaverError(f"quantisation granularity must be 'row' or 'table', got "
                              f"{self.granularity!r}")

    @property
    def label(self) -> str:
        return f"int{self.bits}/{self.granularity}"


def quantize_table(weight: torch.Tensor, config: QuantizeConfig
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """weight (n, d) -> (q int32 (n, d), scales float32 (n,) or (1,), dequantised (n, d))."""
    w = weight.detach().float()
    qmax = 2 ** (config.bits - 1) - 1
    peak = w.abs().amax(dim=1) if config.granularity == "row" else w.abs().amax().reshape(1)
    scales = torch.where(peak > 0, peak / qmax, torch.ones_like(peak))
    per_entry = scales[:, None] if config.granularity == "row" else scales
    q = torch.clamp(torch.round(w / per_entry), -qmax, qmax).to(torch.int32)
    return q, scales, q.float() * per_entry


def quantize_(model: nn.Module, config: QuantizeConfig) -> nn.Module:
    """Replace ``model.embedding.weight`` by its dequantised values, in place; returns model."""
    weight = model.embedding.weight
    _, _, deq = quantize_table(weight, config)
    with torch.no_grad():
        weight.copy_(deq.to(weight.dtype))
    return model


def quantized_artifact_bytes(model: nn.Module, config: QuantizeConfig,
                             metadata: dict[str, Any] | None = None) -> dict[str, int]:
    """Byte breakdown ``{"values", "scales", "rest", "total"}`` (see the module docstring)."""
    from shaver.table.size import predict_artifact_bytes

    n, d = (int(s) for s in model.embedding.weight.shape)
    m = len(model.field_dims)
    full = predict_artifact_bytes(model, np.ones((n, d), dtype=bool), metadata=metadata)
    rest = full - n * d * 4 - m * d * 4
    values = -(-n * d * config.bits // 8)
    scales = 4 * (n if config.granularity == "row" else 1)
    return {"values": values, "scales": scales, "rest": rest, "total": values + scales + rest}
