"""Which table an artifact stores: v1 (one dtype, v1 layouts) or v2 (tiered / low-bit).

Value dtypes accepted by export and by the byte counts:

* ``fp32``, ``fp16``, ``int8``: the v1 table (unchanged), unless the model's embedding is a
  :class:`~shaver.table.tiers.TieredEmbedding`;
* ``int4``, ``int2`` (and ``int8``, ``fp16``, ``fp32`` when written with a scale suffix, e.g.
  ``int4/row``, ``int8/field``): one tier of that dtype over the kept entries, v2;
* a model with a TieredEmbedding: its own tiers (the value dtype argument is then ignored
  for the table), v2.

The first-order weights of a v2 artifact take
:func:`~shaver.table.tiers.first_order_dtype` of its tiers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shaver.errors import ArtifactError
from shaver.runtime.layout import VALUE_DTYPES
from shaver.runtime.lowbit import SCALES, TIER_DTYPES, group_scales, has_scale
from shaver.runtime.tiered import TierSpec

#: Every value dtype spelling the CLI and the API accept.
VALUE_CHOICES: tuple[str, ...] = tuple(VALUE_DTYPES) + ("int4", "int2") + tuple(
    f"{d}/{s}" for d in ("int8", "int4", "int2") for s in SCALES)


def parse_value_dtype(text: str) -> tuple[str, str | None]:
    """``"int4/row"`` -> ("int4", "row"); ``"fp32"`` -> ("fp32", None) (no scale given)."""
    dtype, sep, scale = str(text).partition("/")
    if dtype not in TIER_DTYPES or (sep and scale not in SCALES) or (sep and not scale):
        raise ArtifactError(f"unknown value dtype {text!r}: expected one of "
                            f"{', '.join(VALUE_CHOICES)}")
    return dtype, (scale if sep else None)


def is_v1(value_dtype: str) -> bool:
    return value_dtype in VALUE_DTYPES


@dataclass
class TablePlan:
    """A v2 table: tier map uint8 (n, d), tier specs; ``weight``/``scales`` when encoding."""

    tier_map: np.ndarray
    tiers: list[TierSpec]
    weight: np.ndarray | None = None
    scales: list[np.ndarray | None] | None = None


def fits_v1(tiers: Sequence[TierSpec]) -> bool:
    """Whether format v1 stores this plan exactly: one fp32 tier (pruning alone). v1's fp16
    and int8 tables also store their dense fields' codebook values in that dtype, which a
    tier does not, so only fp32 is the same model in both formats."""
    return len(tiers) == 1 and tiers[0].value_dtype == "fp32"


def v1_value_dtype(model: torch.nn.Module, value_dtype: str) -> str:
    """The value dtype a v1 table of ``model`` is written in: fp32 for a plan embedding
    that fits v1 (its own tiers decide, not the argument), else ``value_dtype``."""
    tiers = getattr(model.embedding, "tiers", None)
    return "fp32" if tiers is not None and fits_v1(tiers) else value_dtype


def table_plan(model: torch.nn.Module, mask: np.ndarray, value_dtype: str,
               with_values: bool = False) -> TablePlan | None:
    """The v2 table of ``model`` + ``mask`` for ``value_dtype``, or None for a v1 table (the
    writer emits v1 whenever the plan fits it: :func:`fits_v1`).

    ``with_values``: also the stored weight and scales (export); sizes need only the map.
    """
    emb = model.embedding
    tiers = getattr(emb, "tiers", None)
    if tiers is not None and fits_v1(tiers):
        return None
    if tiers is not None:
        tier_map = emb.tier_map.detach().cpu().numpy()
        if not np.array_equal(tier_map > 0, mask):
            raise ArtifactError("the mask differs from the tiered embedding's kept entries")
        if not with_values:
            return TablePlan(tier_map, list(tiers))
        return TablePlan(tier_map, list(tiers), emb.weight.detach().float().cpu().numpy(),
                         emb.tier_scales())
    dtype, scale = parse_value_dtype(value_dtype)
    if scale is None and is_v1(dtype):
        return None
    spec = TierSpec(dtype, scale or "field")
    tier_map = np.asarray(mask, dtype=np.uint8)
    if not with_values:
        return TablePlan(tier_map, [spec])
    weight = emb.weight.detach().float().cpu().numpy()
    scales: list[np.ndarray | None] = [None]
    if has_scale(dtype):
        rows, _ = np.nonzero(mask)
        n, m = weight.shape[0], len(model.field_dims)
        row_field = np.repeat(np.arange(m), np.asarray(model.field_dims, np.int64))
        group = rows if spec.scale == "row" else row_field[rows]
        scales = [group_scales(weight[mask], group, n if spec.scale == "row" else m, dtype,
                               spec.scale)]
    return TablePlan(tier_map, [spec], weight, scales)
