"""An artifact's slots (numpy only): its field layout, validated, and lookups on slots.

A model with multi-valued fields (*bags*, :mod:`shaver.layout`) reads a sample as a row of
SLOTS: one per single-valued field, ``max_len`` per bag, padded with :data:`~shaver.layout.PAD`
(-1). The artifact stores the layout in the model config (``config["layout"]``, as
:meth:`shaver.models.base.CTRModel.config` writes it); the feature map, when present, carries
the dataset's own (``meta["layout"]``), which must agree. Without bags there is one slot per
field and everything here is what the runtime did before bags existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from shaver.errors import ArtifactError, DataError, ShaverError
from shaver.layout import FieldLayout
from shaver.runtime.tiered import TieredTables


def read_layout(config: Mapping[str, Any], num_fields: int, where: str) -> FieldLayout:
    """The layout of a model config (``config["layout"]``: a list of bags, or absent);
    :class:`ArtifactError` naming the defect when it is malformed."""
    try:
        return FieldLayout.from_json(num_fields, config.get("layout"))
    except (ShaverError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ArtifactError(f"{where}: malformed field layout in the model config ({exc})") \
            from None


def check_feature_map_layout(feature_map: Any, layout: FieldLayout, where: str) -> None:
    """:class:`ArtifactError` unless the feature map's dataset layout (its ``meta.layout``)
    is the model's: the encoder would otherwise build slots the model does not read."""
    if not isinstance(feature_map, Mapping) or not isinstance(feature_map.get("meta"), Mapping):
        return  # an unusable feature map is refused when it is used (runtime.encode)
    meta = feature_map["meta"]
    try:
        own = FieldLayout.from_json(layout.num_fields, meta.get("layout"))
    except (ShaverError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ArtifactError(f"{where}: malformed field layout in the feature map ({exc})") \
            from None
    if own != layout:
        raise ArtifactError(f"{where}: the feature map's layout ({own.describe()}) differs "
                            f"from the model's ({layout.describe()})")


def field_names(feature_map: Any, num_fields: int) -> list[str]:
    """Field names from the feature map's meta, else ``field0``, ``field1``, ..."""
    meta = feature_map.get("meta") if isinstance(feature_map, Mapping) else None
    names = meta.get("field_names") if isinstance(meta, Mapping) else None
    if isinstance(names, list) and len(names) == num_fields \
            and all(isinstance(n, str) and n for n in names):
        return list(names)
    return [f"field{f}" for f in range(num_fields)]


def check_slots(layout: FieldLayout, bounds: np.ndarray, x: Any, w: Any = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate a batch: ``x`` int (batch, slots) global ids, slot s holding an id of its
    field (a bag slot may hold the pad -1), ``w`` float (batch, slots) bag value weights or
    None -> (x int64, w float32 or None). :class:`DataError` naming the first defect."""
    x = np.asarray(x)
    m, s = layout.num_fields, layout.num_slots
    what = f"(batch, {m})" if s == m else f"(batch, {s}) (slots of {m} fields: " \
        f"{layout.describe()})"
    if x.ndim != 2 or x.shape[1] != s or not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"ids must be an integer array {what}, got {x.dtype} {x.shape}")
    x = x.astype(np.int64)
    field = layout.slot_field
    lo, hi = bounds[:-1][field], bounds[1:][field]
    pad_ok = np.isin(field, [b.field for b in layout.bags])
    bad = ((x < lo) | (x >= hi)) & ~(pad_ok & (x == -1))
    if bad.any():
        row, col = (int(v[0]) for v in np.nonzero(bad))
        f = int(field[col])
        where = f"slot {col} (field {f})" if layout.has_bags else f"field {f}"
        pad = " (or -1, a pad)" if pad_ok[col] else ""
        raise DataError(f"id {x[row, col]} in row {row}, {where} is outside that field's "
                        f"range [{bounds[f]}, {bounds[f + 1]}){pad}")
    if w is None:
        return x, None
    w = np.asarray(w)
    if w.shape != x.shape or not np.issubdtype(w.dtype, np.number):
        raise DataError(f"weights must be a float array shaped like the ids {x.shape}, got "
                        f"{w.dtype} {w.shape}")
    w = w.astype(np.float32)
    if not np.all(np.isfinite(w)):
        raise DataError("weights must be finite")
    return x, w


def lookup_slots(tables: TieredTables, layout: FieldLayout, x: np.ndarray) -> np.ndarray:
    """x int64 (batch, slots) (checked) -> float32 (batch, slots, d): the table's rows, zeros
    in pads (only real ids are looked up)."""
    if not layout.has_bags:
        return tables.lookup(x)
    valid = x >= 0
    out = np.zeros((*x.shape, tables.dim), dtype=np.float32)
    out[valid] = tables.lookup(x[valid])
    return out
