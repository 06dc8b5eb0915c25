"""The feature map of a prepared dataset: what an artifact needs to encode raw rows.

``{"meta": ..., "vocab": ...}``: the dataset's meta (spec, fields, splits; without its file
checksums) and its vocabularies. Export stores it in the artifact's ``feature_map`` section
and the exact size oracle (:mod:`shaver.table.size`) counts it, so both read it from here.
"""

from __future__ import annotations

import logging
from typing import Any

from shaver.data.store import open_dataset
from shaver.errors import ShaverError

log = logging.getLogger(__name__)


def feature_map_of(dataset_path: str | None) -> dict[str, Any] | None:
    """{"meta": ..., "vocab": ...} of a prepared dataset, or None if it cannot be opened."""
    if not dataset_path:
        return None
    try:
        dataset = open_dataset(dataset_path)
        vocab = dataset.vocabularies
    except (ShaverError, OSError) as exc:
        log.warning("no feature map in the artifact: dataset %s unavailable (%s)", dataset_path, exc)
        return None
    meta = {k: v for k, v in dataset.meta.items() if k != "checksums"}
    return {"meta": meta, "vocab": vocab() if callable(vocab) else vocab}
