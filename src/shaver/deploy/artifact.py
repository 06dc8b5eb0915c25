"""Export a pruned model to one shaver artifact file, and load it back.

The file format (container, layouts, sections) is described in
:mod:`shaver.runtime.container` and :mod:`shaver.runtime.layout`; sizes in
:mod:`shaver.deploy.size`. Section names:

* ``emb.<f>.values`` / ``emb.<f>.mask`` / ``emb.<f>.count`` / ``emb.<f>.cols`` per field ``f``,
  ``emb.scales`` (int8 only), ``codebook`` (m, d) fp32;
* ``first_order/<state-dict name>``: per-id tables (DeepFM/FM ``linear.weight.weight``) in
  the value dtype (int8: with ``first_order_scale/<name>``, one fp32 scale per field);
* ``head/<state-dict name>``: every other tensor of the model (fp32; int64 counters), or
  with a quantised head (format version 2) fp16, or int8 matrices with
  ``head_scale/<name>`` per-output-channel scales (:mod:`shaver.runtime.headq`);
* ``feature_map`` (optional JSON: dataset meta + vocabularies) and ``info`` (fixed 4 KiB
  JSON: budget, metrics, fingerprints, provenance).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shaver import __version__
from shaver.deploy.size import (
    artifact_version,
    encode_feature_map,
    encode_info,
    head_tensors,
    plan_artifact,
)
from shaver.deploy.tiers import table_plan
from shaver.errors import ArtifactError, ShaverError
from shaver.fileio import check_output_file
from shaver.pruning.tiers import first_order_dtype as tiers_first_order_dtype
from shaver.runtime.container import SectionSpec, container_bytes, write_container
from shaver.runtime.headq import first_order_dtype, quantize_int8
from shaver.runtime.layout import encode_embedding, quantize_per_field
from shaver.runtime.model import Artifact, load_artifact
from shaver.runtime.tiered import encode_tiered

log = logging.getLogger(__name__)
#: Keys of pruned.json copied into the artifact's ``info`` section.
INFO_KEYS = ("budget", "scorer", "order", "codebook", "placeholder", "kept", "total",
             "finetuned", "metrics", "model_fingerprint", "dataset", "artifact_bytes",
             "table_bytes", "plan")


@dataclass
class ExportResult:
    """What :func:`export_artifact` wrote: ``path``, ``bytes``, the per-kind breakdown and
    the ``info`` stored in the artifact (budget, metrics, ...)."""

    path: Path
    bytes: int
    breakdown: dict[str, int]
    info: dict[str, Any]


def embedding_state(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight (n, d) f32, mask bool (n, d), codebook (m, d) f32) of a model's embedding.

    A MaskedEmbedding gives its mask and codebook; a plain embedding counts as fully kept.
    """
    emb = model.embedding
    weight = emb.weight.detach().float().cpu().numpy()
    mask = getattr(emb, "mask", None)
    codebook = getattr(emb, "codebook", None)
    if mask is None:
        mask_np = np.ones(weight.shape, dtype=bool)
    else:
        mask_np = mask.detach().cpu().numpy().astype(bool)
    m = len(model.field_dims)
    codebook_np = (np.zeros((m, weight.shape[1]), np.float32) if codebook is None
                   else codebook.detach().float().cpu().numpy())
    return weight, mask_np, codebook_np


def export_artifact(source: torch.nn.Module | str | os.PathLike[str], out_path: str | os.PathLike[str],
                    *, value_dtype: str = "fp32", metadata: Mapping[str, Any] | None = None,
                    include_feature_map: bool = True, head_dtype: str = "fp32") -> ExportResult:
    """Write the artifact of a pruned model (or a pruned directory) to ``out_path``.

    source: a model with the shaver interface (its embedding a MaskedEmbedding, or a plain
    embedding = nothing pruned), or a directory written by ``shaver.pruning.io.save_pruned``.
    metadata: free JSON (budget, metrics, ...; at most 4 KiB) plus an optional
    ``feature_map`` entry (dataset meta + vocabularies) that lets the runtime encode raw rows.
    From a pruned directory, the info of pruned.json and (when ``include_feature_map`` and the
    dataset is still there) its feature map are added. ``head_dtype`` (fp32 | fp16 | int8)
    stores the dense head quantised (:mod:`shaver.runtime.headq`; format version 2). The
    write is atomic.
    """
    model, meta = _resolve_source(source, metadata, include_feature_map)
    weight, mask, codebook = embedding_state(model)
    fields, specs = plan_artifact(model, mask, value_dtype, meta, head_dtype)
    arrays, table_dtype = _table_arrays(model, weight, mask, codebook, value_dtype, fields)
    arrays.update(_head_arrays(model, specs, first_order_dtype(table_dtype, head_dtype)))
    meta = dict(meta)
    if "feature_map" in meta:
        arrays["feature_map"] = np.frombuffer(encode_feature_map(meta.pop("feature_map")), np.uint8)
    meta.setdefault("library_version", __version__)
    arrays["info"] = np.frombuffer(encode_info(meta), np.uint8)
    out_path = check_output_file(out_path, ArtifactError)
    version = artifact_version(fields)
    written = write_container(out_path, fields, [(s, arrays[s.name]) for s in specs], version)
    if written != container_bytes(fields, specs, version):  # pragma: no cover - tested
        raise ArtifactError("internal error: written size differs from the planned size")
    log.debug("wrote %s (%d bytes, %s)", out_path, written, value_dtype)
    loaded = load_artifact(out_path)
    return ExportResult(out_path, written, loaded.breakdown(), loaded.info)


def _head_arrays(model: torch.nn.Module, specs: list[SectionSpec],
                 table_dtype: str) -> dict[str, np.ndarray]:
    """Arrays of the head and first-order sections, in the dtypes ``specs`` plan."""
    state = head_tensors(model)
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        kind, _, name = spec.name.partition("/")
        if kind == "head":
            tensor = state[name].detach().cpu()
            if spec.dtype == "i8" and tensor.is_floating_point():
                arrays[spec.name], arrays[f"head_scale/{name}"] = quantize_int8(
                    name, tensor.float().numpy())
            else:
                arrays[spec.name] = tensor.numpy()
        elif kind == "first_order":
            table = state[name].detach().float().cpu().numpy()
            arrays[spec.name], scales = quantize_per_field(table, model.field_dims, table_dtype)
            if scales is not None:
                arrays[f"first_order_scale/{name}"] = scales
    return arrays


def _table_arrays(model: torch.nn.Module, weight: np.ndarray, mask: np.ndarray,
                  codebook: np.ndarray, value_dtype: str, fields: dict[str, Any]
                  ) -> tuple[dict[str, np.ndarray], str]:
    """Section arrays of the embedding table, and the dtype its first-order weights take
    before the head's dtype is considered (:func:`shaver.runtime.headq.first_order_dtype`)."""
    plan = table_plan(model, mask, value_dtype, with_values=True)
    if plan is None:
        layouts, sections = encode_embedding(weight, mask, codebook, model.field_dims,
                                             value_dtype)
        if layouts != fields["embedding"]["layouts"]:  # pragma: no cover - same function
            raise ArtifactError("internal error: layout plan changed between sizing and encoding")
        return {spec.name: arr for spec, arr in sections}, value_dtype
    assert plan.weight is not None and plan.scales is not None
    arrays = encode_tiered(plan.weight, plan.tier_map, codebook, model.field_dims, plan.tiers,
                           plan.scales)
    return arrays, tiers_first_order_dtype(plan.tiers)


def _resolve_source(source: Any, metadata: Mapping[str, Any] | None,
                    include_feature_map: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
    meta = dict(metadata or {})
    if isinstance(source, torch.nn.Module):
        return source, meta
    path = Path(source)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a pruned directory (expected pruned.json + "
                            "model.safetensors) nor a model")
    from shaver.pruning.io import load_pruned
    pruned = load_pruned(path, device="cpu")
    info = {k: pruned.info[k] for k in INFO_KEYS if k in pruned.info}
    info["source"] = str(path)
    if include_feature_map and "feature_map" not in meta:
        feature_map = feature_map_of(pruned.info.get("dataset", {}).get("path"))
        if feature_map is not None:
            meta["feature_map"] = feature_map
    return pruned.model, {**info, **meta}


def feature_map_of(dataset_path: str | None) -> dict[str, Any] | None:
    """{"meta": ..., "vocab": ...} of a prepared dataset, or None if it cannot be opened."""
    if not dataset_path:
        return None
    from shaver.data.store import open_dataset
    try:
        dataset = open_dataset(dataset_path)
        vocab = dataset.vocabularies
    except (ShaverError, OSError) as exc:
        log.warning("no feature map in the artifact: dataset %s unavailable (%s)", dataset_path, exc)
        return None
    meta = {k: v for k, v in dataset.meta.items() if k != "checksums"}
    return {"meta": meta, "vocab": vocab() if callable(vocab) else vocab}


__all__ = ["Artifact", "ExportResult", "SectionSpec", "embedding_state", "export_artifact",
           "feature_map_of", "load_artifact"]
