"""THE decoder of an artifact's embedding table, v1 or v2, into one structure for lookups
(:class:`~shaver.runtime.tiered.TieredTables`), validating every index (numpy only).

A v1 table (:mod:`shaver.runtime.layout`) is a one-tier table: its value dtype with one scale
per field, a dense field being a tier that holds every entry of the field (its stored values
are the effective rows, codebook values included), so the runtime, the torch module and the
ONNX graph have one lookup whatever the format."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shaver.errors import ArtifactError
from shaver.runtime.layout import (
    _POPCOUNT,
    _expect,
    _section,
    _sparse_to_mask,
    block_pointers,
    field_bounds,
)
from shaver.runtime.lowbit import TIER_DTYPES, has_scale, packed_bytes
from shaver.runtime.tiered import (
    _STREAM_DTYPE,
    MAX_TIERS,
    TIER_LAYOUTS,
    TieredTables,
    TierSpec,
    TierTables,
    prefix,
)


def decode_table(arrays: Mapping[str, np.ndarray], embedding: Mapping[str, Any],
                 field_dims: Sequence[int], dim: int, where: str) -> TieredTables:
    """The table of a v1 (``layouts``) or v2 (``tiers``) embedding header."""
    if "tiers" in embedding:
        return decode_tiered(arrays, embedding, field_dims, dim, where)
    return decode_embedding(arrays, field_dims, dim, [str(v) for v in embedding["layouts"]],
                            str(embedding["value_dtype"]), where)


def decode_embedding(arrays: Mapping[str, np.ndarray], field_dims: Sequence[int], dim: int,
                     layouts: Sequence[str], value_dtype: str, where: str) -> TieredTables:
    """A v1 table (per-field ``layouts``, one ``value_dtype``) as a one-tier table."""
    nb = (dim + 7) // 8
    masks, counts = [], []
    values = _section(arrays, "emb.values", where)
    full_row = np.packbits(np.ones(dim, dtype=bool), bitorder="little")
    # a dense field stores every value: bound its rows by the file before allocating anything
    dense_values = sum(int(r) * dim for r, lay in zip(field_dims, layouts) if lay == "dense")
    _expect(dense_values <= values.size, where, "rows of the dense fields")
    for f, (rows, lay) in enumerate(zip(field_dims, layouts)):
        if lay == "dense":
            masks.append(np.broadcast_to(full_row, (rows, nb)))
            counts.append(np.full(rows, dim, dtype=np.uint16))
        elif lay == "bitmask":
            mk = _section(arrays, f"emb.{f}.mask", where)
            _expect(mk.shape == (rows, nb), where, f"emb.{f}.mask shape")
            if dim % 8:
                _expect(not np.any(mk[:, -1] >> (dim % 8)), where, f"emb.{f}.mask padding bits")
            masks.append(mk)
            counts.append(_POPCOUNT[mk].sum(axis=1, dtype=np.uint16))
        elif lay == "sparse":
            masks.append(_sparse_to_mask(arrays, f, rows, dim, where))
            counts.append(arrays[f"emb.{f}.count"].astype(np.uint16))
        else:
            raise ArtifactError(f"{where}: unknown layout {lay!r} for field {f}")
    mask_all = np.concatenate(masks) if masks else np.zeros((0, nb), np.uint8)
    counts_all = np.concatenate(counts)
    _expect(values.ndim == 1 and int(counts_all.sum(dtype=np.int64)) == values.size, where,
            "count of stored values")
    block_ptr, in_block = block_pointers(counts_all, dim)
    m = len(field_dims)
    scales = (_section(arrays, "emb.scales", where) if value_dtype == "int8"
              else np.zeros(0, np.float32))
    codebook = _section(arrays, "codebook", where)
    _expect(codebook.shape == (m, dim) and scales.shape in ((m,), (0,)), where,
            "codebook/scales shape")
    _expect(bool(np.all(np.isfinite(scales))), where, "finite scales")
    tier = TierTables(TierSpec(value_dtype), mask_all, block_ptr, in_block, values,
                      int(values.size), scales.astype(np.float32))
    return TieredTables([tier], codebook.astype(np.float32), field_bounds(field_dims), dim)


def read_tier_specs(embedding: Mapping[str, Any], m: int, where: str
                    ) -> list[tuple[TierSpec, list[str]]]:
    """Tier specs and layouts from the header; unknown dtypes / layouts are refused."""
    tiers = embedding.get("tiers")
    if not isinstance(tiers, list) or not 1 <= len(tiers) <= MAX_TIERS:
        raise ArtifactError(f"{where}: the embedding has no valid tier list")
    out = []
    for t, desc in enumerate(tiers):
        if not isinstance(desc, dict):
            raise ArtifactError(f"{where}: tier {t} is not an object")
        dtype = desc.get("value_dtype")
        if dtype not in TIER_DTYPES:
            raise ArtifactError(f"{where}: tier {t} has value dtype {dtype!r}, which this "
                                f"shaver does not know (it reads {', '.join(TIER_DTYPES)})")
        layouts = desc.get("layouts")
        if desc.get("scale") not in ("field", "row") or not isinstance(layouts, list) \
                or len(layouts) != m or any(v not in TIER_LAYOUTS for v in layouts):
            raise ArtifactError(f"{where}: tier {t} has an inconsistent description")
        out.append((TierSpec(dtype, desc["scale"]), [str(v) for v in layouts]))
    return out


def decode_tiered(arrays: Mapping[str, np.ndarray], embedding: Mapping[str, Any],
                  field_dims: Sequence[int], dim: int, where: str) -> TieredTables:
    """Rebuild :class:`TieredTables` from section arrays, validating every index."""
    m, n, nb = len(field_dims), int(sum(field_dims)), (dim + 7) // 8
    taken = np.zeros((n, nb), np.uint8)  # packed union of the tiers decoded so far
    tiers = []
    for t, (spec, layouts) in enumerate(read_tier_specs(embedding, m, where)):
        tier = _decode_tier(arrays, t, spec, layouts, field_dims, dim, taken, where)
        _expect(not np.any(taken & tier.masks), where, "tiers (an entry is stored twice)")
        taken = taken | tier.masks
        tiers.append(tier)
    if "codebook" in arrays:
        codebook = arrays["codebook"]
        _expect(codebook.shape == (m, dim), where, "codebook shape")
    else:  # left out only when every entry is in some tier
        full = np.packbits(np.ones(dim, bool), bitorder="little")
        _expect(bool(np.all(taken == full)), where, "table (entries pruned, no codebook)")
        codebook = np.zeros((m, dim), np.float32)
    return TieredTables(tiers, codebook.astype(np.float32), field_bounds(field_dims), dim)


def _decode_tier(arrays: Mapping[str, np.ndarray], t: int, spec: TierSpec,
                 layouts: Sequence[str], field_dims: Sequence[int], dim: int,
                 taken: np.ndarray, where: str) -> TierTables:
    p, nb = prefix(t), (dim + 7) // 8
    masks, present = [], []
    bounds = field_bounds(field_dims)
    full = np.packbits(np.ones(dim, bool), bitorder="little")
    for f, (rows, lay) in enumerate(zip(field_dims, layouts)):
        if lay == "rest":
            mk = np.bitwise_and(np.bitwise_not(taken[bounds[f]:bounds[f + 1]]), full)
        else:
            mk = _field_mask(arrays, p, f, int(rows), dim, lay, where)
        masks.append(mk)
        present.append(mk.any(axis=1))
    mask_all = np.concatenate(masks) if masks else np.zeros((0, nb), np.uint8)
    counts = _POPCOUNT[mask_all].sum(axis=1, dtype=np.uint16)
    count = int(counts.sum(dtype=np.int64))
    values = _section(arrays, f"{p}values", where)
    stream = _STREAM_DTYPE[spec.value_dtype]
    length = packed_bytes(count, spec.value_dtype) if stream == "u8" else count
    _expect(values.ndim == 1 and values.size == length and values.dtype.str.endswith(
        {"f32": "f4", "f16": "f2", "i8": "i1", "u8": "u1"}[stream]), where,
        f"{p}values (count or dtype of stored values)")
    block_ptr, in_block = block_pointers(counts, dim)
    scales = _scales(arrays, p, spec, np.concatenate(present) if present else
                     np.zeros(0, bool), len(field_dims), where)
    return TierTables(spec, mask_all, block_ptr, in_block, values, count, scales)


def _field_mask(arrays: Mapping[str, np.ndarray], p: str, f: int, rows: int, dim: int,
                lay: str, where: str) -> np.ndarray:
    nb = (dim + 7) // 8
    if lay == "empty":
        return np.zeros((rows, nb), np.uint8)
    if lay == "sparse":
        local = {"emb." + k[len(p):]: v for k, v in arrays.items() if k.startswith(p)}
        return _sparse_to_mask(local, f, rows, dim, where)
    if lay in ("rowmap", "rows"):
        has_bits = _section(arrays, f"{p}{f}.rows", where)
        _expect(has_bits.shape == ((rows + 7) // 8,), where, f"{p}{f}.rows shape")
        has = np.unpackbits(has_bits, count=rows, bitorder="little").astype(bool)
        _expect(int(np.unpackbits(has_bits, bitorder="little").sum()) == int(has.sum()), where,
                f"{p}{f}.rows padding bits")
        full = np.packbits(np.ones(dim, bool), bitorder="little")
        if lay == "rows":
            return np.where(has[:, None], full[None, :], np.uint8(0)).astype(np.uint8)
        mk = _section(arrays, f"{p}{f}.mask", where)
        _expect(mk.shape == (int(has.sum()), nb), where, f"{p}{f}.mask shape")
        _expect(bool(np.all(_POPCOUNT[mk].sum(axis=1) > 0)), where, f"{p}{f} listed rows")
        if dim % 8:
            _expect(not np.any(mk[:, -1] >> (dim % 8)), where, f"{p}{f}.mask padding bits")
        listed = np.zeros((rows, nb), np.uint8)
        listed[has] = mk
        return listed
    mk = _section(arrays, f"{p}{f}.mask", where)
    _expect(mk.shape == (rows, nb), where, f"{p}{f}.mask shape")
    if dim % 8:
        _expect(not np.any(mk[:, -1] >> (dim % 8)), where, f"{p}{f}.mask padding bits")
    return mk


def _scales(arrays: Mapping[str, np.ndarray], p: str, spec: TierSpec, present: np.ndarray,
            m: int, where: str) -> np.ndarray:
    if not has_scale(spec.value_dtype):
        return np.zeros(0, np.float32)
    stored = _section(arrays, f"{p}scales", where)
    if spec.scale == "field":
        _expect(stored.shape == (m,) and stored.dtype == np.float32, where, f"{p}scales")
        scales = stored.astype(np.float32)
    else:
        _expect(stored.shape == (int(present.sum()),) and stored.dtype == np.float16, where,
                f"{p}scales")
        scales = np.ones(present.size, np.float32)
        scales[present] = stored.astype(np.float32)
    _expect(bool(np.all(np.isfinite(scales))), where, "finite scales")
    return scales
