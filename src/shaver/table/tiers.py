"""Kept entries in several precisions: the tier map and the fake-quantised torch model.

A tier map (uint8 (n, d)) assigns each entry 0 = pruned (codebook) or ``t + 1`` = tier ``t``,
and each tier has a :class:`~shaver.runtime.tiered.TierSpec` (value dtype, scale
granularity). :func:`tiered_copy` quantises the kept entries of each tier exactly as the
artifact stores them (:mod:`shaver.runtime.lowbit`) and returns a model whose
:class:`TieredEmbedding` holds the dequantised values, and whose first-order weights (DeepFM,
FM) are dequantised like the artifact's: this model computes what the numpy runtime computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from shaver.errors import ModelError, ShaverError
from shaver.models.base import copy_without_embedding
from shaver.runtime.layout import dequantize_per_field, quantize_per_field
from shaver.runtime.lowbit import dequantize, group_scales, has_scale, quantize
from shaver.runtime.tiered import TierSpec, check_tier_map
from shaver.table.head import fake_quantize_head
from shaver.table.mask import MaskedEmbedding


class TieredEmbedding(MaskedEmbedding):
    """A :class:`MaskedEmbedding` whose kept entries are stored in tiers of given precision.

    ``weight`` holds the dequantised kept values; ``tier_map`` uint8 (n, d) buffer (0 =
    pruned); ``tiers`` the tier specs; buffers ``scales_<t>`` float32 (m,) / (n,) per tier
    (empty for fp tiers). ``mask`` is ``tier_map > 0``.
    """

    def __init__(self, weight: torch.Tensor, tier_map: torch.Tensor | np.ndarray,
                 codebook: torch.Tensor, field_dims: Sequence[int], tiers: Sequence[TierSpec],
                 scales: Sequence[torch.Tensor | np.ndarray | None]):
        tier_map = torch.as_tensor(np.asarray(tier_map, dtype=np.uint8))
        try:
            check_tier_map(tier_map.numpy(), len(tiers))
        except Exception as exc:
            raise ModelError(f"TieredEmbedding: {exc}") from exc
        if len(scales) != len(tiers):
            raise ModelError(f"TieredEmbedding: {len(tiers)} tiers but {len(scales)} scale arrays")
        super().__init__(weight, tier_map > 0, codebook, field_dims)
        self.tiers = list(tiers)
        self.register_buffer("tier_map", tier_map.to(self.weight.device).clone())
        for t, scale in enumerate(scales):
            value = torch.zeros(0) if scale is None else torch.as_tensor(np.asarray(scale))
            self.register_buffer(f"scales_{t}", value.float().to(self.weight.device))

    def tier_scales(self) -> list[np.ndarray | None]:
        """Per tier: float32 scales, or None for fp tiers."""
        return [getattr(self, f"scales_{t}").cpu().numpy() if has_scale(spec.value_dtype)
                else None for t, spec in enumerate(self.tiers)]

    def extra_repr(self) -> str:
        labels = ", ".join(spec.label for spec in self.tiers)
        return f"{super().extra_repr()}, tiers=[{labels}]"


def tiered_embedding_from_state(state: dict[str, torch.Tensor], tiers: Any,
                                field_dims: Sequence[int]) -> TieredEmbedding:
    """Rebuild a TieredEmbedding from a pruned directory's tensors and ``pruned.json`` tiers."""
    if not isinstance(tiers, list) or not tiers or "embedding.tier_map" not in state:
        raise ModelError("a tiered embedding needs both the 'tiers' list in pruned.json and "
                         "the embedding.tier_map tensor")
    try:
        specs = [TierSpec(str(t["value_dtype"]), str(t.get("scale", "field"))) for t in tiers]
    except (TypeError, KeyError, ShaverError) as exc:
        raise ModelError(f"bad tier description in pruned.json ({exc})") from exc
    scales = [state.get(f"embedding.scales_{t}") for t in range(len(specs))]
    if any(s is None for s in scales):
        raise ModelError(f"the tensors lack the scales of {len(specs)} tiers")
    return TieredEmbedding(state["embedding.weight"], state["embedding.tier_map"].numpy(),
                           state["embedding.codebook"], field_dims, specs, scales)


def quantize_tiers(weight: np.ndarray, tier_map: np.ndarray, field_dims: Sequence[int],
                   tiers: Sequence[TierSpec]) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """(dequantised weight float32 (n, d) with pruned entries 0, scales per tier)."""
    weight = np.asarray(weight, dtype=np.float32)
    check_tier_map(tier_map, len(tiers))
    n = weight.shape[0]
    row_field = np.repeat(np.arange(len(field_dims)), np.asarray(field_dims, np.int64))
    out = np.zeros_like(weight)
    scales: list[np.ndarray | None] = []
    for t, spec in enumerate(tiers):
        mask = tier_map == t + 1
        rows, _ = np.nonzero(mask)
        values = weight[mask]
        if spec.value_dtype == "fp32":
            out[mask], scale = values, None
        elif spec.value_dtype == "fp16":
            out[mask], scale = values.astype(np.float16).astype(np.float32), None
        else:
            group = rows if spec.scale == "row" else row_field[rows]
            groups = n if spec.scale == "row" else len(field_dims)
            scale = group_scales(values, group, groups, spec.value_dtype, spec.scale)
            out[mask] = dequantize(quantize(values, scale[group], spec.bits), scale[group],
                                   spec.bits)
        scales.append(scale)
    return out, scales


def first_order_dtype(tiers: Sequence[TierSpec]) -> str:
    """Storage of the first-order weights next to a tiered table: int8 when any tier is an
    integer dtype, else fp16 when any tier is fp16, else fp32."""
    dtypes = {spec.value_dtype for spec in tiers}
    if dtypes & {"int8", "int4", "int2"}:
        return "int8"
    return "fp16" if "fp16" in dtypes else "fp32"


def first_order_names(model: nn.Module) -> list[str]:
    """State-dict names of the per-id tables outside the embedding (DeepFM/FM linear)."""
    n = int(model.embedding.weight.shape[0])
    return [k for k, v in model.state_dict().items()
            if not k.startswith("embedding.") and v.is_floating_point() and v.dim() == 2
            and v.shape[0] == n and n > 1]


def tiered_copy(model: nn.Module, tier_map: np.ndarray, tiers: Sequence[TierSpec],
                codebook: torch.Tensor | np.ndarray) -> nn.Module:
    """A copy of ``model`` (eval mode) as the artifact of this tier plan computes it.

    ``model``: the base model (its embedding a plain table or a MaskedEmbedding: its
    ``weight`` gives the original values). ``codebook``: (m, d) placeholder of pruned entries.
    """
    emb = model.embedding
    weight = emb.weight.detach().float().cpu().numpy()
    deq, scales = quantize_tiers(weight, np.asarray(tier_map, np.uint8), model.field_dims, tiers)
    clone = copy_without_embedding(model)
    device = emb.weight.device
    clone.embedding = TieredEmbedding(torch.from_numpy(deq).to(device), tier_map,
                                      torch.as_tensor(codebook).float().to(device),
                                      model.field_dims, tiers, scales)
    fo_dtype = first_order_dtype(tiers)
    state = clone.state_dict()
    with torch.no_grad():
        for name in first_order_names(clone):
            table = state[name].detach().float().cpu().numpy()
            stored, scale = quantize_per_field(table, model.field_dims, fo_dtype)
            state[name].copy_(torch.from_numpy(
                dequantize_per_field(stored, scale, model.field_dims)))
    return clone.eval()


def plan_copy(model: nn.Module, tier_map: np.ndarray, tiers: Sequence[TierSpec],
              codebook: torch.Tensor | np.ndarray, head_dtype: str = "fp32") -> nn.Module:
    """A copy of ``model`` (eval mode) as the artifact of this plan computes it: the table's
    tiers (:func:`tiered_copy`) and the head stored in ``head_dtype``
    (:func:`~shaver.table.head.fake_quantize_head`)."""
    clone = tiered_copy(model, tier_map, tiers, codebook)
    if head_dtype == "fp32":
        return clone
    return fake_quantize_head(clone, head_dtype, first_order_dtype(tiers))
