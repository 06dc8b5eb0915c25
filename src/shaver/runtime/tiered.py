"""The tiered embedding table of artifact format v2: plan, encode, decode, look up (numpy only).

Kept entries are split into tiers; every tier stores its entries in one value dtype (fp32,
fp16, int8, int4, int2: see :mod:`shaver.runtime.lowbit`) with one scale granularity (field
or row), like a v1 table of its own. An entry belongs to at most one tier; entries of no tier
read their field's codebook value. A tier map (uint8 (n, d)) says where each entry went:
0 = pruned, ``t + 1`` = tier ``t``.

Header (``"embedding"``): ``{"dim", "field_dims", "tiers": [{"value_dtype", "scale",
"layouts"}, ...]}``. Sections of tier ``t`` are named with the prefix ``emb.`` (t = 0) or
``emb.t<t>.``. Per field, each tier takes the smallest of five layouts (b bits per value,
R rows, K kept entries, P rows holding at least one, nb = ceil(d / 8)):

* ``empty``: nothing (K = 0);
* ``rest``: every entry of the field that no earlier tier holds (later tiers are then empty
  there), no index: K*b bits. A uniform PTQ table is one tier, ``rest`` everywhere;
* ``rows``: ``<p><f>.rows`` u8 (ceil(R/8),) one bit per row (LSB first), the tier holds
  every entry of the rows listed (and no entry of earlier tiers there): R + K*b bits;
* ``bitmask``: ``<p><f>.mask`` u8 (R, nb), then K*b bits;
* ``sparse``: ``<p><f>.count`` u8 (R,) + ``<p><f>.cols`` u8 (K,) (d <= 255), then K*b bits;
* ``rowmap``: ``<p><f>.rows`` u8 (ceil(R/8),) (rows holding entries) and ``<p><f>.mask``
  u8 (P, nb) keep-bits of those rows, then K*b bits.

Then ``<p>values`` (all fields' values, row-major: f32, f16, i8, or u8 packed for int4/int2)
and, for integer dtypes, ``<p>scales`` of kind ``scales``: f32 (m,) per field, or f16 (P_total,)
for the rows holding values, in row order. The codebook (m, d) f32 closes the table; it is
left out when no entry is pruned (every entry in some tier).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shaver.errors import ArtifactError
from shaver.runtime.container import SectionSpec
from shaver.runtime.layout import (
    BLOCK_SHIFT,
    field_bounds,
)
from shaver.runtime.lowbit import (
    bits_of,
    check_tier,
    dequantize,
    has_scale,
    pack,
    packed_bytes,
    quantize,
    unpack_at,
)

TIER_LAYOUTS = ("empty", "rest", "rows", "bitmask", "sparse", "rowmap")
_STREAM_DTYPE = {"fp32": "f32", "fp16": "f16", "int8": "i8", "int4": "u8", "int2": "u8"}
_NUMPY = {"f32": np.float32, "f16": np.float16, "i8": np.int8, "u8": np.uint8}
MAX_TIERS = 8


@dataclass(frozen=True)
class TierSpec:
    """One tier's storage: ``value_dtype`` (fp32 fp16 int8 int4 int2), ``scale`` (field, row)."""

    value_dtype: str
    scale: str = "field"

    def __post_init__(self) -> None:
        check_tier(self.value_dtype, self.scale)

    @property
    def bits(self) -> int:
        return bits_of(self.value_dtype)

    @property
    def label(self) -> str:
        return f"{self.value_dtype}/{self.scale}" if has_scale(self.value_dtype) \
            else self.value_dtype

    def to_json(self) -> dict[str, str]:
        return {"value_dtype": self.value_dtype, "scale": self.scale}


def prefix(tier: int) -> str:
    return "emb." if tier == 0 else f"emb.t{tier}."


@dataclass
class TierCounts:
    """Per field: kept entries ``kept`` and rows holding at least one ``present``."""

    kept: np.ndarray
    present: np.ndarray


def tier_counts(tier_mask: np.ndarray, field_dims: Sequence[int]) -> TierCounts:
    """Counts of one tier's bool mask (n, d), per field."""
    bounds = field_bounds(field_dims)
    kept = np.add.reduceat(tier_mask.sum(axis=1, dtype=np.int64), bounds[:-1]) \
        if tier_mask.shape[0] else np.zeros(len(field_dims), np.int64)
    present = np.add.reduceat(tier_mask.any(axis=1).astype(np.int64), bounds[:-1]) \
        if tier_mask.shape[0] else np.zeros(len(field_dims), np.int64)
    return TierCounts(kept.astype(np.int64), present.astype(np.int64))


def layout_bits(rows: np.ndarray, dim: int, counts: TierCounts, bits: int,
                remaining: np.ndarray, clean_rows: np.ndarray) -> np.ndarray:
    """(6, m) bits of each layout per field (inf where a layout cannot hold the tier).

    ``remaining``: entries per field that no earlier tier holds; ``clean_rows``: whether
    every row this tier touches is whole and untouched by earlier tiers."""
    nb = (dim + 7) // 8
    k, p = counts.kept.astype(np.float64), counts.present.astype(np.float64)
    inf = np.inf
    empty = np.where(k == 0, 0.0, inf)
    rest = np.where(k == remaining, k * bits, inf)
    row_bits = np.ceil(rows / 8) * 8
    whole = np.where((k == p * dim) & clean_rows, row_bits + k * bits, inf)
    bitmask = rows * nb * 8 + k * bits
    sparse = rows * 8 + k * (8 + bits) if dim <= 255 else np.full(k.shape, inf)
    rowmap = row_bits + p * nb * 8 + k * bits
    return np.stack([empty, rest, whole, bitmask, sparse, rowmap])


def choose_tier_layouts(counts: TierCounts, field_dims: Sequence[int], dim: int,
                        spec: TierSpec, remaining: np.ndarray,
                        clean_rows: np.ndarray) -> list[str]:
    rows = np.asarray(field_dims, dtype=np.float64)
    best = np.argmin(layout_bits(rows, dim, counts, spec.bits, remaining, clean_rows), axis=0)
    return [TIER_LAYOUTS[int(i)] for i in best]


def tier_section_specs(t: int, spec: TierSpec, layouts: Sequence[str], counts: TierCounts,
                       field_dims: Sequence[int], dim: int) -> list[SectionSpec]:
    """Index, values and scales sections of tier ``t``."""
    p, nb = prefix(t), (dim + 7) // 8
    specs: list[SectionSpec] = []
    for f, (rows, lay) in enumerate(zip(field_dims, layouts)):
        k, present = int(counts.kept[f]), int(counts.present[f])
        if lay == "bitmask":
            specs.append(SectionSpec(f"{p}{f}.mask", "index", "u8", (int(rows), nb)))
        elif lay == "sparse":
            specs.append(SectionSpec(f"{p}{f}.count", "index", "u8", (int(rows),)))
            specs.append(SectionSpec(f"{p}{f}.cols", "index", "u8", (k,)))
        elif lay in ("rowmap", "rows"):
            specs.append(SectionSpec(f"{p}{f}.rows", "index", "u8", ((int(rows) + 7) // 8,)))
            if lay == "rowmap":
                specs.append(SectionSpec(f"{p}{f}.mask", "index", "u8", (present, nb)))
    stored = int(counts.kept.sum())
    dtype = _STREAM_DTYPE[spec.value_dtype]
    length = packed_bytes(stored, spec.value_dtype) if dtype == "u8" else stored
    specs.append(SectionSpec(f"{p}values", "values", dtype, (length,)))
    if has_scale(spec.value_dtype):
        shape = (len(field_dims),) if spec.scale == "field" else (int(counts.present.sum()),)
        specs.append(SectionSpec(f"{p}scales", "scales",
                                 "f32" if spec.scale == "field" else "f16", shape))
    return specs


def plan_tiered(tier_map: np.ndarray, field_dims: Sequence[int], dim: int,
                tiers: Sequence[TierSpec]) -> tuple[dict[str, Any], list[SectionSpec]]:
    """Header ``embedding`` entry and the table's section specs for a tier map (n, d)."""
    check_tier_map(tier_map, len(tiers))
    header_tiers, specs = [], []
    bounds = field_bounds(field_dims)
    remaining = np.asarray(field_dims, np.int64) * dim
    for t, spec in enumerate(tiers):
        mask = tier_map == t + 1
        counts = tier_counts(mask, field_dims)
        layouts = choose_tier_layouts(counts, field_dims, dim, spec, remaining,
                                      _clean_rows(tier_map, mask, t, bounds))
        header_tiers.append({**spec.to_json(), "layouts": layouts})
        specs += tier_section_specs(t, spec, layouts, counts, field_dims, dim)
        remaining = remaining - counts.kept
    if tier_map.size == 0 or not tier_map.all():
        specs.append(SectionSpec("codebook", "codebook", "f32", (len(field_dims), dim)))
    embedding = {"dim": dim, "field_dims": [int(v) for v in field_dims], "tiers": header_tiers}
    return embedding, specs


def _clean_rows(tier_map: np.ndarray, mask: np.ndarray, t: int,
                bounds: np.ndarray) -> np.ndarray:
    """Per field: every row the tier touches is whole (``rows`` can hold it) and no earlier
    tier touches those rows."""
    touched = mask.any(axis=1)
    whole = mask.all(axis=1)
    earlier = ((tier_map > 0) & (tier_map <= t)).any(axis=1)
    bad = (touched & (~whole | earlier)).astype(np.int64)
    if not bad.size:
        return np.ones(len(bounds) - 1, bool)
    return np.add.reduceat(bad, bounds[:-1]) == 0


def check_tier_map(tier_map: np.ndarray, n_tiers: int) -> None:
    if not 1 <= n_tiers <= MAX_TIERS:
        raise ArtifactError(f"a tiered table has 1 to {MAX_TIERS} tiers, got {n_tiers}")
    if tier_map.dtype != np.uint8 or tier_map.ndim != 2:
        raise ArtifactError(f"the tier map must be uint8 (n, d), got {tier_map.dtype} "
                            f"{tier_map.shape}")
    if tier_map.size and int(tier_map.max()) > n_tiers:
        raise ArtifactError(f"the tier map names tier {int(tier_map.max()) - 1}, but only "
                            f"{n_tiers} tiers are described (0..{n_tiers - 1})")


def encode_tiered(weight: np.ndarray, tier_map: np.ndarray, codebook: np.ndarray,
                  field_dims: Sequence[int], tiers: Sequence[TierSpec],
                  scales: Sequence[np.ndarray | None]) -> dict[str, np.ndarray]:
    """Section arrays of the table. ``scales[t]``: float32 (m,) or (n,) per the tier's
    granularity, None for fp tiers (see :func:`shaver.runtime.lowbit.group_scales`)."""
    embedding, specs = plan_tiered(tier_map, field_dims, weight.shape[1], tiers)
    bounds = field_bounds(field_dims)
    row_field = np.repeat(np.arange(len(field_dims)), np.asarray(field_dims, np.int64))
    out: dict[str, np.ndarray] = {}
    for t, (spec, desc) in enumerate(zip(tiers, embedding["tiers"])):
        p, mask = prefix(t), tier_map == t + 1
        for f, lay in enumerate(desc["layouts"]):
            mk = mask[bounds[f]:bounds[f + 1]]
            if lay == "bitmask":
                out[f"{p}{f}.mask"] = np.packbits(mk, axis=1, bitorder="little")
            elif lay == "sparse":
                out[f"{p}{f}.count"] = mk.sum(axis=1).astype(np.uint8)
                out[f"{p}{f}.cols"] = np.nonzero(mk)[1].astype(np.uint8)
            elif lay in ("rowmap", "rows"):
                has = mk.any(axis=1)
                out[f"{p}{f}.rows"] = np.packbits(has, bitorder="little")
                if lay == "rowmap":
                    out[f"{p}{f}.mask"] = np.packbits(mk[has], axis=1, bitorder="little")
        rows, _ = np.nonzero(mask)
        values = weight[mask].astype(np.float32)
        if not has_scale(spec.value_dtype):
            out[f"{p}values"] = values.astype(_NUMPY[_STREAM_DTYPE[spec.value_dtype]])
            continue
        scale = np.asarray(scales[t], np.float32)
        per_value = scale[rows] if spec.scale == "row" else scale[row_field[rows]]
        codes = quantize(values, per_value, spec.bits)
        out[f"{p}values"] = codes if spec.bits == 8 else pack(codes, spec.bits)
        out[f"{p}scales"] = scale if spec.scale == "field" else \
            scale[mask.any(axis=1)].astype(np.float16)
    if any(spec.name == "codebook" for spec in specs):
        out["codebook"] = np.asarray(codebook, np.float32)
    missing = {s.name for s in specs} ^ set(out)
    if missing:  # pragma: no cover - plan and encoder walk the same layouts
        raise ArtifactError(f"internal error: sections {sorted(missing)} planned or encoded alone")
    return out


@dataclass
class TierTables:
    """One decoded tier: keep-bits (n, nb), row pointers, its value stream and scales."""

    spec: TierSpec
    masks: np.ndarray
    block_ptr: np.ndarray
    in_block: np.ndarray
    values: np.ndarray
    count: int
    scales: np.ndarray  # float32 (m,) field / (n,) row / (0,) none

    def row_start(self, x: np.ndarray) -> np.ndarray:
        return self.block_ptr[x >> BLOCK_SHIFT] + self.in_block[x]

    def values_at(self, pos: np.ndarray, x: np.ndarray, field: np.ndarray) -> np.ndarray:
        """float32 values at stream positions ``pos`` (rows ``x``, fields ``field``)."""
        bits, dtype = self.spec.bits, self.spec.value_dtype
        if dtype in ("fp32", "fp16"):
            return self.values[pos].astype(np.float32)
        codes = self.values[pos] if bits == 8 else unpack_at(self.values, pos, bits)
        scale = self.scales[x] if self.spec.scale == "row" else self.scales[field]
        return dequantize(codes, scale[..., None], bits)


@dataclass
class TieredTables:
    """Decoded tiered table, ready for lookups (same interface as ``EmbeddingTables``)."""

    tiers: list[TierTables]
    codebook: np.ndarray
    bounds: np.ndarray
    dim: int

    @property
    def kept(self) -> int:
        return sum(t.count for t in self.tiers)

    def lookup(self, x: np.ndarray) -> np.ndarray:
        """x: int64 (batch, fields) global ids (range-checked) -> float32 (batch, fields, d)."""
        field = np.searchsorted(self.bounds, x, side="right") - 1
        out = self.codebook[field]
        for tier in self.tiers:
            bits = np.unpackbits(tier.masks[x], axis=-1, bitorder="little")[..., :self.dim]
            kept = bits.astype(bool)
            if not tier.count or not kept.any():
                continue
            pos = tier.row_start(x)[..., None] + np.cumsum(bits, axis=-1, dtype=np.int64) - 1
            vals = tier.values_at(np.where(kept, pos, 0), x, field)
            out = np.where(kept, vals, out)
        return out.astype(np.float32)
