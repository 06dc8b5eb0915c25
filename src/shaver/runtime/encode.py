"""Raw rows -> global ids with the feature map stored in an artifact (torch-free)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from shaver.errors import ArtifactError, ShaverError

if TYPE_CHECKING:
    from shaver.data.encode import RowEncoder


def make_encoder(feature_map: Any, path: str,
                 field_dims: Sequence[int] | None = None) -> RowEncoder:
    """A row encoder from ``{"meta": dataset meta, "vocab": vocabularies}``.

    Uses :class:`shaver.data.encode.RowEncoder` (same discretisation and OOV handling as
    preparation). Raises :class:`ArtifactError` if the feature map is unusable or does not
    match the artifact's fields.
    """
    from shaver.data.encode import RowEncoder

    if not isinstance(feature_map, dict) or not {"meta", "vocab"} <= set(feature_map):
        raise ArtifactError(f"{path}: feature map lacks 'meta' and 'vocab'")
    try:
        encoder = RowEncoder.from_meta(feature_map["meta"], feature_map["vocab"])
    except (ShaverError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: unusable feature map ({exc})") from exc
    if field_dims is not None and list(encoder.field_dims) != list(field_dims):
        raise ArtifactError(f"{path}: feature map has field sizes {encoder.field_dims}, the model "
                            f"{list(field_dims)}")
    return encoder


def encode_slots(encoder: RowEncoder, rows: Sequence[Mapping[str, Any]], *,
                 allow_missing: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x int64 (rows, slots), w float32 (rows, slots) or None)`` of raw ``rows``: list
    columns padded into their bag's slots, and the values' weights when a bag is weighted
    (:meth:`RowEncoder.encode_slots`)."""
    x, w = encoder.encode_slots(rows, allow_missing=allow_missing)
    return np.asarray(x, dtype=np.int64), None if w is None else np.asarray(w, np.float32)
