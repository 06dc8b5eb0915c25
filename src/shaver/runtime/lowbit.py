"""Low-bit embedding values: quantise to int8 / int4 / int2 codes, pack, unpack (numpy only).

Used by the tiered (format v2) table: every tier of kept entries stores its values in one
value dtype with one scale granularity.

* ``fp32`` / ``fp16``: the value itself (no scale).
* ``int8``: signed symmetric, ``q = clip(rint(w / s), -127, 127)``, value ``q * s`` (as the
  v1 int8 artifact), one byte per value, ``s = max|w| / 127``.
* ``int4`` / ``int2``: unsigned codes ``c`` in ``[0, 2**b)``, value ``(c - h) * s`` with
  ``h = (2**b - 1) / 2`` (a "mid-rise" grid: all 2**b levels are used, 16 for int4, 4 for
  int2; zero itself is not a level). Packed little-endian within a byte: value ``j`` of a
  stream lives in byte ``j // (8 / b)`` at bit ``(j % (8 / b)) * b``. The scale is the one of
  a small grid of clipping ratios ``s = r * max|w| / h`` that minimises the squared error of
  the group (clipping the tails lowers the error of the many small values; at 2 bits it
  matters, absmax wastes the outer levels on one outlier).

Scales: ``field`` = one fp32 scale per field (per tier); ``row`` = one fp16 scale per row that
stores at least one value of the tier. Scales are rounded to their stored dtype BEFORE the
codes are computed, so ``dequantize(codes, stored scales)`` is exactly what the model saw.
"""

from __future__ import annotations

import numpy as np

from shaver.errors import ArtifactError

#: Value dtypes of a tier and their bits per value.
TIER_DTYPES: dict[str, int] = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4, "int2": 2}
SCALES: tuple[str, ...] = ("field", "row")
#: Stored dtype of a scale, by granularity.
SCALE_DTYPE = {"field": np.dtype("<f4"), "row": np.dtype("<f2")}
#: Clipping ratios tried for int4 / int2 scales (1.0 = absmax).
CLIP_RATIOS = np.linspace(1.0, 0.3, 15)
_TINY = {"field": np.float32(2.0 ** -100), "row": np.float32(2.0 ** -24)}


def check_tier(value_dtype: str, scale: str) -> tuple[str, str]:
    """Validate a tier's (value dtype, scale granularity); raise naming the allowed values."""
    if value_dtype not in TIER_DTYPES:
        raise ArtifactError(f"unknown value dtype {value_dtype!r}: expected one of "
                            f"{', '.join(TIER_DTYPES)}")
    if scale not in SCALES:
        raise ArtifactError(f"unknown scale granularity {scale!r}: expected one of "
                            f"{', '.join(SCALES)}")
    return value_dtype, scale


def bits_of(value_dtype: str) -> int:
    return TIER_DTYPES[check_tier(value_dtype, "field")[0]]


def has_scale(value_dtype: str) -> bool:
    """Integer dtypes carry scales; fp32 / fp16 do not."""
    return value_dtype.startswith("int")


def packed_bytes(count: int, value_dtype: str) -> int:
    """Bytes of ``count`` values of ``value_dtype`` in one stream."""
    return (int(count) * bits_of(value_dtype) + 7) // 8


def half_range(bits: int) -> float:
    return (2 ** bits - 1) / 2.0


def group_scales(values: np.ndarray, group: np.ndarray, groups: int, value_dtype: str,
                 scale: str) -> np.ndarray:
    """Scale of each group (stored dtype, returned as float32) for ``values`` (k,) in groups
    ``group`` (k,) int64 in [0, groups). Empty groups get scale 1."""
    bits = bits_of(value_dtype)
    w = np.asarray(values, dtype=np.float32)
    peak = np.zeros(groups, np.float32)
    np.maximum.at(peak, group, np.abs(w))
    if bits == 8:
        best = peak / np.float32(127.0)
    else:
        h = half_range(bits)
        candidates = [_positive(_stored(peak * np.float32(r / h), scale), scale)
                      for r in CLIP_RATIOS]
        errors = [np.bincount(group, (dequantize(quantize(w, c[group], bits), c[group], bits)
                                      - w) ** 2, minlength=groups) for c in candidates]
        best = np.stack(candidates)[np.argmin(np.stack(errors), axis=0), np.arange(groups)]
    return _positive(_stored(best, scale), scale)


def _positive(scales: np.ndarray, scale: str) -> np.ndarray:
    """Zero scales (groups of zeros, or none) -> a tiny positive one (no 0 / 0)."""
    return np.where(scales > 0, scales, _TINY[scale]).astype(np.float32)


def _stored(scales: np.ndarray, scale: str) -> np.ndarray:
    """Round scales to their stored dtype (row scales fp16, clipped to its range)."""
    if scale == "row":
        return np.minimum(scales, np.float32(65504.0)).astype(np.float16).astype(np.float32)
    return scales.astype(np.float32)


def quantize(values: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """Codes of ``values`` with per-value ``scales``: int8 (bits 8) or uint8 codes (4, 2)."""
    w = np.asarray(values, dtype=np.float32)
    if bits == 8:
        return np.clip(np.rint(w / scales), -127, 127).astype(np.int8)
    h = np.float32(half_range(bits))
    return np.clip(np.floor(w / scales + h + np.float32(0.5)), 0, 2 ** bits - 1).astype(np.uint8)


def dequantize(codes: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """float32 values of codes (the runtime's arithmetic, bit for bit)."""
    if bits == 8:
        return codes.astype(np.float32) * scales
    return (codes.astype(np.float32) - np.float32(half_range(bits))) * scales


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes (k,) < 2**bits -> packed uint8 (ceil(k * bits / 8),)."""
    per = 8 // bits
    codes = np.asarray(codes, dtype=np.uint8).reshape(-1)
    padded = np.zeros(-(-codes.size // per) * per, np.uint8)
    padded[:codes.size] = codes
    lanes = padded.reshape(-1, per).astype(np.uint16) << (np.arange(per, dtype=np.uint16) * bits)
    return lanes.sum(axis=1).astype(np.uint8)


def unpack_at(packed: np.ndarray, positions: np.ndarray, bits: int) -> np.ndarray:
    """Codes (uint8) at ``positions`` (int64, any shape) of a packed stream."""
    per = 8 // bits
    byte = packed[positions // per].astype(np.int64)
    return ((byte >> ((positions % per) * bits)) & (2 ** bits - 1)).astype(np.uint8)


def unpack(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    """The first ``count`` codes of a packed stream."""
    return unpack_at(packed, np.arange(int(count), dtype=np.int64), bits)
