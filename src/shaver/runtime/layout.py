"""Compressed embedding layouts: choose, encode and decode (numpy only).

The table (n, d) is stored field by field; each field takes the smallest of three layouts
(``v`` = bytes per stored value: 4 fp32, 2 fp16, 1 int8; R rows, K kept entries):

* ``dense``: every entry of the *effective* table (kept value, or the field's codebook value
  where pruned): R*d*v bytes, no index. Wins when almost everything is kept.
* ``bitmask``: a d-bit keep-mask per row (``ceil(d/8)`` bytes, bit j of a row = column j,
  least significant bit first) + the kept values row-major: R*ceil(d/8) + K*v bytes. The
  start of a row's values is the popcount prefix sum, computed once when the file is loaded
  (so the file holds no offsets: exactly 2 index bytes per row for d = 16).
* ``sparse`` (CSR with uint8 columns and uint8 per-row counts instead of int32 pointers; only
  for d <= 255): R + K + K*v bytes. Wins when fewer than about one entry per row is kept.

A kept entry is kept because its mask bit is set, whatever its value: kept values that are
exactly 0 stay kept (unlike the authors' CSR, which drops stored zeros). int8 values carry one
fp32 scale per field (symmetric, max |value| / 127) in the section ``emb.scales``.

Decoding (:func:`shaver.runtime.decode.decode_table`) reads a v1 table as a one-tier v2
table: packed masks (n, ceil(d/8)) where a dense field is a tier holding every entry, row
pointers, the values, the per-field scales and the codebook (m, d), so one lookup serves both
formats. The codebook of an entry is chosen by the field its *id* belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shaver.errors import ArtifactError
from shaver.runtime.container import SectionSpec

VALUE_DTYPES = {"fp32": "f32", "fp16": "f16", "int8": "i8"}
VALUE_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
LAYOUTS = ("dense", "bitmask", "sparse")
BLOCK_SHIFT = 8  # row pointers in memory: one int64 per 256 rows + a small in-block offset
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def check_value_dtype(value_dtype: str) -> str:
    if value_dtype not in VALUE_DTYPES:
        raise ArtifactError(f"value dtype must be one of {', '.join(VALUE_DTYPES)}, "
                            f"got {value_dtype!r}")
    return value_dtype


def field_bounds(field_dims: Sequence[int]) -> np.ndarray:
    """int64 (m + 1,): first global row of each field, then n."""
    return np.concatenate([[0], np.cumsum(np.asarray(field_dims, dtype=np.int64))])


def choose_layouts(mask: np.ndarray, field_dims: Sequence[int],
                   value_dtype: str) -> tuple[list[str], np.ndarray]:
    """Smallest layout per field and the kept count per field, from a bool mask (n, d).

    Vectorised: one row count over the mask plus O(m) work.
    """
    n, d = mask.shape
    bounds = field_bounds(field_dims)
    if bounds[-1] != n:
        raise ArtifactError(f"mask has {n} rows but the fields hold {bounds[-1]}")
    # Whole-slice counts (no per-row pass): count_nonzero of a contiguous bool block is fast.
    kept = np.array([np.count_nonzero(mask[a:b]) for a, b in zip(bounds[:-1], bounds[1:])],
                    dtype=np.int64)
    return layouts_for_counts(kept, field_dims, d, value_dtype), kept


def layouts_for_counts(kept: np.ndarray, field_dims: Sequence[int], d: int,
                       value_dtype: str) -> list[str]:
    """Smallest layout per field from the kept count per field (all a layout's size needs)."""
    rows = np.asarray(field_dims, dtype=np.int64)
    kept = np.asarray(kept, dtype=np.int64)
    v = VALUE_BYTES[check_value_dtype(value_dtype)]
    costs = [rows * d * v, rows * ((d + 7) // 8) + kept * v]
    if d <= 255:
        costs.append(rows + kept * (1 + v))
    best = np.argmin(np.stack(costs), axis=0)
    return [LAYOUTS[int(i)] for i in best]


def embedding_specs(field_dims: Sequence[int], dim: int, layouts: Sequence[str],
                    kept: Sequence[int], value_dtype: str) -> list[SectionSpec]:
    """The sections holding the compressed table (values, index, scales, codebook)."""
    specs: list[SectionSpec] = []
    stored = 0
    for f, (rows, lay, k) in enumerate(zip(field_dims, layouts, kept)):
        rows, k = int(rows), int(k)
        if lay == "dense":
            stored += rows * dim
            continue
        stored += k
        if lay == "bitmask":
            specs.append(SectionSpec(f"emb.{f}.mask", "index", "u8", (rows, (dim + 7) // 8)))
        else:
            specs.append(SectionSpec(f"emb.{f}.count", "index", "u8", (rows,)))
            specs.append(SectionSpec(f"emb.{f}.cols", "index", "u8", (k,)))
    # All fields' stored values in one section (field order, row-major): the runtime uses it
    # in place, without a copy.
    specs.append(SectionSpec("emb.values", "values", VALUE_DTYPES[value_dtype], (stored,)))
    if value_dtype == "int8":
        specs.append(SectionSpec("emb.scales", "values", "f32", (len(field_dims),)))
    specs.append(SectionSpec("codebook", "codebook", "f32", (len(field_dims), dim)))
    return specs


def _quantize(values: np.ndarray, value_dtype: str) -> tuple[np.ndarray, float]:
    if value_dtype == "fp32":
        return values.astype(np.float32), 1.0
    if value_dtype == "fp16":
        return values.astype(np.float16), 1.0
    peak = float(np.abs(values).max()) if values.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    return np.clip(np.rint(values / scale), -127, 127).astype(np.int8), scale


def encode_embedding(weight: np.ndarray, mask: np.ndarray, codebook: np.ndarray,
                     field_dims: Sequence[int], value_dtype: str
                     ) -> tuple[list[str], list[tuple[SectionSpec, np.ndarray]]]:
    """weight float (n, d), mask bool (n, d), codebook (m, d) -> layouts and section arrays."""
    n, d = weight.shape
    layouts, kept = choose_layouts(mask, field_dims, value_dtype)
    specs = {s.name: s for s in embedding_specs(field_dims, d, layouts, kept, value_dtype)}
    bounds = field_bounds(field_dims)
    out: list[tuple[SectionSpec, np.ndarray]] = []
    scales = np.ones(len(field_dims), dtype=np.float32)
    chunks = []
    for f, lay in enumerate(layouts):
        w, mk = weight[bounds[f]:bounds[f + 1]], mask[bounds[f]:bounds[f + 1]]
        if lay == "dense":
            stored = np.where(mk, w, codebook[f][None, :])
        else:
            stored = w[mk]
            if lay == "bitmask":
                out.append((specs[f"emb.{f}.mask"], np.packbits(mk, axis=1, bitorder="little")))
            else:
                out.append((specs[f"emb.{f}.count"], mk.sum(axis=1).astype(np.uint8)))
                out.append((specs[f"emb.{f}.cols"], np.nonzero(mk)[1].astype(np.uint8)))
        quantized, scales[f] = _quantize(stored.reshape(-1), value_dtype)
        chunks.append(quantized)
    dtype = {"fp32": np.float32, "fp16": np.float16, "int8": np.int8}[value_dtype]
    out.append((specs["emb.values"], np.concatenate(chunks) if chunks else np.zeros(0, dtype)))
    if value_dtype == "int8":
        out.append((specs["emb.scales"], scales))
    out.append((specs["codebook"], codebook.astype(np.float32)))
    return layouts, out


def quantize_per_field(table: np.ndarray, field_dims: Sequence[int], value_dtype: str
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-id table (n, ...) -> stored array, and fp32 per-field scales for int8 (else None)."""
    if value_dtype != "int8":
        return _quantize(table, value_dtype)[0], None
    bounds = field_bounds(field_dims)
    out = np.empty(table.shape, np.int8)
    scales = np.ones(len(field_dims), np.float32)
    for f in range(len(field_dims)):
        out[bounds[f]:bounds[f + 1]], scales[f] = _quantize(table[bounds[f]:bounds[f + 1]], "int8")
    return out, scales


def dequantize_per_field(stored: np.ndarray, scales: np.ndarray | None,
                         field_dims: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`quantize_per_field` (float32)."""
    values = stored.astype(np.float32)
    if scales is not None:
        per_row = np.repeat(scales.astype(np.float32), np.asarray(field_dims, dtype=np.int64))
        values *= per_row.reshape((-1,) + (1,) * (values.ndim - 1))
    return values


def block_pointers(counts: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row stored counts (n,) -> (block_ptr int64 (ceil(n/256),), in_block int16/32 (n,)).

    Computed in chunks of 64k rows so that no n-sized int64 temporary is needed.
    """
    n, block = counts.size, 1 << BLOCK_SHIFT
    in_block = np.empty(n, dtype=np.int16 if dim <= 128 else np.int32)
    block_ptr = np.empty((n + block - 1) // block, dtype=np.int64)
    base, chunk = 0, block << 8
    for lo in range(0, n, chunk):
        part = np.asarray(counts[lo:lo + chunk], dtype=np.int64)
        starts = np.cumsum(part) - part + base
        heads = starts[::block]
        block_ptr[lo // block:lo // block + heads.size] = heads
        in_block[lo:lo + part.size] = starts - np.repeat(heads, block)[:part.size]
        base += int(part.sum())
    return block_ptr, in_block


def _sparse_to_mask(arrays: dict[str, np.ndarray], f: int, rows: int, dim: int,
                    where: str) -> np.ndarray:
    counts = _section(arrays, f"emb.{f}.count", where)
    cols = _section(arrays, f"emb.{f}.cols", where)
    _expect(counts.shape == (rows,) and cols.ndim == 1, where, f"emb.{f} sparse shapes")
    _expect(int(counts.sum(dtype=np.int64)) == cols.size and bool(np.all(cols < dim)), where,
            f"emb.{f} sparse index")
    row_of = np.repeat(np.arange(rows), counts)
    same_row = row_of[1:] == row_of[:-1]
    # Columns must be strictly increasing within each row (the order values are stored in).
    _expect(bool(np.all(cols[1:][same_row] > cols[:-1][same_row])), where,
            f"emb.{f} column order")
    bits = np.zeros((rows, dim), dtype=bool)
    bits[row_of, cols] = True
    return np.packbits(bits, axis=1, bitorder="little")


def _section(arrays: dict[str, np.ndarray], name: str, where: str) -> np.ndarray:
    if name not in arrays:
        raise ArtifactError(f"{where}: section {name} is missing")
    return arrays[name]


def _expect(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ArtifactError(f"{where}: inconsistent {what}")
