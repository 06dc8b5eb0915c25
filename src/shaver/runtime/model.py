"""Load a shaver artifact and predict with numpy only."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shaver.errors import ArtifactError, DataError
from shaver.runtime.calibration import apply_calibration, read_calibration
from shaver.runtime.container import KINDS, PREAMBLE, Container, read_container
from shaver.runtime.csvio import RowFormat, data_format
from shaver.runtime.decode import decode_table, read_tier_specs
from shaver.runtime.encode import encode_slots, make_encoder
from shaver.runtime.headq import HEAD_DTYPES, dequantize_head
from shaver.runtime.heads import MALFORMED, Head, build_head
from shaver.runtime.layout import LAYOUTS, VALUE_DTYPES, dequantize_per_field
from shaver.runtime.slots import (
    check_feature_map_layout,
    check_slots,
    field_names,
    lookup_slots,
    read_layout,
)
from shaver.runtime.tiered import TieredTables


class Artifact:
    """A loaded, validated artifact: compressed embedding + head, ready to predict.

    Attributes: ``config`` (model config dict), ``field_dims``, ``layout`` (the fields' slots:
    :class:`shaver.layout.FieldLayout`, bags from ``config["layout"]``), ``dim``, ``value_dtype``,
    ``head_dtype`` (fp32 | fp16 | int8), ``layouts`` (per field), ``tables``
    (:class:`~shaver.runtime.tiered.TieredTables`, one tier for a v1 table), ``head_tensors`` (name -> array, int8 and fp16 ones
    dequantised to fp32) and ``first_order`` (name -> array), ``calibration`` (float32
    ``(scale, bias)`` applied to the logit, or None), ``info`` (budget, metrics, provenance),
    ``feature_map`` (dataset meta + vocabularies, or None), ``size`` (file bytes).
    """

    def __init__(self, container: Container):
        self.container = container
        self.path = container.path
        self.size = container.size
        where = container.path
        self.version = container.version
        try:
            self.config: dict[str, Any] = dict(container.header["model"])
            emb = container.header["embedding"]
            self.field_dims = [int(v) for v in emb["field_dims"]]
            self.dim = int(emb["dim"])
            self.tiered = "tiers" in emb  # int4/int2 values, row scales, tiers: version 2
            if self.tiered:
                self.tiers = read_tier_specs(emb, len(self.field_dims), where)
                self.value_dtype = "+".join(spec.label for spec, _ in self.tiers)
                self.layouts = [lay for _, layouts in self.tiers for lay in layouts]
            else:
                self.value_dtype = str(emb["value_dtype"])
                self.layouts = [str(v) for v in emb["layouts"]]
            self.head_dtype = str(container.header.get("head", {}).get("dtype", "fp32"))
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise ArtifactError(f"{where}: header lacks the model description ({exc})") from exc
        if (self.tiered and self.version < 2) or (not self.tiered and (
                self.value_dtype not in VALUE_DTYPES or len(self.layouts) != len(self.field_dims)
                or any(v not in LAYOUTS for v in self.layouts))) \
                or not 0 < self.dim <= 65535 or any(v <= 0 for v in self.field_dims) \
                or self.head_dtype not in HEAD_DTYPES:
            raise ArtifactError(f"{where}: inconsistent embedding description in the header")
        self.layout = read_layout(self.config, len(self.field_dims), where)
        arrays = container.arrays
        self.tables: TieredTables = decode_table(arrays, emb, self.field_dims, self.dim, where)
        self.first_order = self._first_order(arrays)
        self.head_tensors = dequantize_head(_by_prefix(arrays, "head/"),
                                            _by_prefix(arrays, "head_scale/"), self.head_dtype,
                                            where)
        self.calibration = read_calibration(container.header, arrays, where, self.version)
        self.info: dict[str, Any] = container.json("info") if "info" in arrays else {}
        if not isinstance(self.info, dict):
            raise ArtifactError(f"{where}: the info section is not a JSON object")
        self.feature_map = container.json("feature_map") if "feature_map" in arrays else None
        check_feature_map_layout(self.feature_map, self.layout, where)
        self._head: Head | None = None
        self._encoder: Any = None

    def _first_order(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """First-order tables as float32 (int8 ones dequantised with their field scales)."""
        scales = _by_prefix(arrays, "first_order_scale/")
        out = {}
        n, m = sum(self.field_dims), len(self.field_dims)
        for name, stored in _by_prefix(arrays, "first_order/").items():
            scale = scales.get(name)
            if stored.shape[:1] != (n,) or (scale is not None and scale.shape != (m,)) \
                    or (stored.dtype == np.int8) != (scale is not None):
                raise ArtifactError(f"{self.path}: first-order table {name} is inconsistent")
            out[name] = dequantize_per_field(stored, scale, self.field_dims)
        return out

    # -- prediction -------------------------------------------------------------------------
    @property
    def head(self) -> Head:
        """The numpy head (built on first use, checked on a one-row batch)."""
        if self._head is None:
            head = build_head(self.config, self.head_tensors, self.first_order, self.layout)
            probe = self.tables.bounds[:-1][self.layout.slot_field][None, :]
            try:
                out = np.asarray(head(self.tables.lookup(probe), probe))
            except MALFORMED as exc:
                raise ArtifactError(f"{self.path}: head tensors do not fit the model ({exc})") \
                    from exc
            if out.shape != (1,):
                raise ArtifactError(f"{self.path}: head returns shape {out.shape}, expected (1,)")
            self._head = head
        return self._head

    def check_ids(self, x: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
        """Validate global ids int (batch, slots): slot s must hold an id of its field (a
        bag's slot may hold the pad -1). Without bags a slot is a field: (batch, fields)."""
        return check_slots(self.layout, self.tables.bounds, x)[0]

    def embed(self, x: np.ndarray) -> np.ndarray:
        """x: int (batch, slots) global ids -> float32 (batch, slots, d) (zeros in pads)."""
        return lookup_slots(self.tables, self.layout, self.check_ids(x))

    def logits(self, x: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """x: int (batch, slots) global ids (bag pads -1), w: float (batch, slots) bag value
        weights or None (every value weighs 1) -> float32 logits (batch,), calibrated when
        the artifact carries a calibration."""
        x, w = check_slots(self.layout, self.tables.bounds, x, w)
        emb = lookup_slots(self.tables, self.layout, x)
        z = np.asarray(self.head(emb, x, w), dtype=np.float32)
        return apply_calibration(z, self.calibration)

    def predict(self, x: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        """x: int (batch, slots) global ids, w: bag value weights or None -> click
        probabilities float32 (batch,)."""
        z = self.logits(x, w).astype(np.float64)
        return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)

    @property
    def field_names(self) -> list[str]:
        """The fields' names (the feature map's; ``field<f>`` without one)."""
        return field_names(self.feature_map, len(self.field_dims))

    @property
    def encoder(self) -> Any:
        """The :class:`~shaver.data.encode.RowEncoder` of the stored feature map."""
        if self._encoder is None:
            if self.feature_map is None:
                raise DataError(f"{self.path}: the artifact has no feature map (vocabularies); "
                                "pass global ids instead")
            self._encoder = make_encoder(self.feature_map, self.path, self.field_dims)
        return self._encoder

    @property
    def raw_columns(self) -> list[str]:
        """The raw columns that :meth:`encode_rows` reads (each row must carry all)."""
        return list(self.encoder.columns)

    @property
    def row_format(self) -> RowFormat:
        """How the files the model's data was prepared from lay out raw rows (delimiter,
        header, columns: the feature map's input spec), for
        :func:`shaver.runtime.csvio.read_raw_rows`."""
        return data_format(self.encoder.spec.input, self.raw_columns, self.path)

    def encode_rows(self, rows: Sequence[Mapping[str, str]], *,
                    allow_missing: bool = False) -> np.ndarray:
        """Raw rows (column name -> raw string) -> global ids (batch, slots) via the stored
        feature map (list columns padded with -1 into their bag's slots).

        Every row must carry every one of :attr:`raw_columns` (a missing value is '' or
        None): a row without one is an error naming the columns, unless ``allow_missing``
        (then absent columns are missing values). :meth:`encode_slots` gives the bags'
        weights too."""
        return self.encode_slots(rows, allow_missing=allow_missing)[0]

    def encode_slots(self, rows: Sequence[Mapping[str, str]], *, allow_missing: bool = False
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw rows -> ``(x (batch, slots), w (batch, slots) or None)``: the ids of
        :meth:`encode_rows` and, when a bag is weighted, its values' weights."""
        return encode_slots(self.encoder, rows, allow_missing=allow_missing)

    def predict_rows(self, rows: Sequence[Mapping[str, str]], *,
                     allow_missing: bool = False) -> np.ndarray:
        """Raw rows -> probabilities (batch,). Unseen values take their field's OOV id;
        columns are checked as in :meth:`encode_rows`."""
        return self.predict(*self.encode_slots(rows, allow_missing=allow_missing))

    # -- description ------------------------------------------------------------------------
    def table_bytes(self) -> int:
        """Bytes of the embedding table: kept values, index, scales and codebook."""
        parts = self.breakdown()
        return sum(parts[k] for k in ("values", "index", "scales", "codebook"))

    def breakdown(self) -> dict[str, int]:
        """Bytes per kind (values, index, scales, codebook, first_order, head, metadata); sums
        to size (v1 int8 tables count their per-field scales under values).

        ``metadata`` includes the preamble, the header and the alignment padding.
        """
        out = dict.fromkeys(KINDS, 0)
        for entry in self.container.table:
            out[entry[1]] += int(entry[5])
        out["metadata"] += self.size - sum(out.values())
        return out

    def __repr__(self) -> str:
        return (f"Artifact({self.config.get('name')!r}, rows={sum(self.field_dims)}, "
                f"dim={self.dim}, {self.value_dtype}, {self.size} bytes)")


def _by_prefix(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read and validate ``path``; raise :class:`ArtifactError` on any defect."""
    return Artifact(read_container(path))


__all__ = ["Artifact", "load_artifact", "PREAMBLE"]
