"""Export a pruned model to one shaver artifact file, and load it back.

The file format (container, layouts, sections) is described in
:mod:`shaver.runtime.container` and :mod:`shaver.runtime.layout`; sizes in
:mod:`shaver.table.size`. Section names:

* ``emb.<f>.values`` / ``emb.<f>.mask`` / ``emb.<f>.count`` / ``emb.<f>.cols`` per field ``f``,
  ``emb.scales`` (int8 only), ``codebook`` (m, d) fp32;
* ``first_order/<state-dict name>``: per-id tables (DeepFM/FM ``linear.weight.weight``) in
  the value dtype (int8: with ``first_order_scale/<name>``, one fp32 scale per field);
* ``head/<state-dict name>``: every other tensor of the model (fp32; int64 counters), or
  with a quantised head (format version 2) fp16, or int8 matrices with
  ``head_scale/<name>`` per-output-channel scales (:mod:`shaver.runtime.headq`);
* ``calibration`` (format version 2, only when the model carries one): f32 (2,)
  [scale, bias] of the logit, announced by the header field ``"calibration"``
  (:mod:`shaver.runtime.calibration`);
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
from shaver.data.feature_map import feature_map_of
from shaver.errors import ArtifactError
from shaver.fileio import check_output_file
from shaver.models.base import calibration_of
from shaver.pruning.io import load_pruned
from shaver.runtime.calibration import SECTION as CALIBRATION_SECTION
from shaver.runtime.container import SectionSpec, container_bytes, write_container
from shaver.runtime.headq import first_order_dtype, quantize_int8
from shaver.runtime.layout import encode_embedding, quantize_per_field
from shaver.runtime.model import Artifact, load_artifact
from shaver.runtime.slots import check_feature_map_layout
from shaver.runtime.tiered import encode_tiered
from shaver.table.head import head_tensors
from shaver.table.plan import table_plan, v1_value_dtype
from shaver.table.size import (
    artifact_version,
    encode_feature_map,
    encode_info,
    plan_artifact,
)
from shaver.table.tiers import first_order_dtype as tiers_first_order_dtype

log = logging.getLogger(__name__)
#: Keys of pruned.json copied into the artifact's ``info`` section.
INFO_KEYS = ("budget", "method", "winner", "scorer", "order", "codebook", "placeholder",
             "kept", "total", "plan", "head_dtype", "finetuned", "metrics", "model_fingerprint",
             "dataset", "artifact_bytes", "table_bytes")


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


def export_artifact(source: Any, out_path: str | os.PathLike[str], *,
                    value_dtype: str | None = None, metadata: Mapping[str, Any] | None = None,
                    include_feature_map: bool = True, head_dtype: str | None = None
                    ) -> ExportResult:
    """Write the artifact of a cut, a pruned directory or a pruned model to ``out_path``.

    source: a :class:`~shaver.pruning.api.PruneResult` (what :func:`shaver.prune` returns), a
    directory written by ``shaver prune`` (``shaver.pruning.io.save_pruned``), or a model with
    the shaver interface (its embedding a plan module, or a plain embedding = nothing
    pruned). A cut and its pruned directory give the same file, byte for byte: the record's
    :data:`INFO_KEYS`, its head precision and (when ``include_feature_map`` and the dataset
    is still there) the dataset's feature map. metadata: free JSON added to the ``info``
    section (at most 4 KiB) plus an optional ``feature_map`` entry. A cut's plan decides its
    precisions (prune with ``values`` / ``heads`` for others): ``value_dtype`` and
    ``head_dtype`` other than the cut's are refused. For a plain model or a mask without a
    plan, ``value_dtype`` (default fp32; int4 / int2 or ``/row`` scales: format v2) and
    ``head_dtype`` (fp32 | fp16 | int8, default fp32; format v2 when quantised) choose how it
    is stored. The write is atomic.
    """
    model, meta, recorded_head = _resolve_source(source, metadata, include_feature_map)
    value_dtype, head_dtype = _storage(model, value_dtype, head_dtype, recorded_head)
    weight, mask, codebook = embedding_state(model)
    fields, specs = plan_artifact(model, mask, value_dtype, meta, head_dtype)
    arrays, table_dtype = _table_arrays(model, weight, mask, codebook, value_dtype, fields)
    arrays.update(_head_arrays(model, specs, first_order_dtype(table_dtype, head_dtype)))
    meta = dict(meta)
    out_path = check_output_file(out_path, ArtifactError)
    if "feature_map" in meta and getattr(model, "layout", None) is not None:
        check_feature_map_layout(meta["feature_map"], model.layout, str(out_path))
    if "feature_map" in meta:
        arrays["feature_map"] = np.frombuffer(encode_feature_map(meta.pop("feature_map")), np.uint8)
    meta.setdefault("library_version", __version__)
    arrays["info"] = np.frombuffer(encode_info(meta), np.uint8)
    version = artifact_version(fields)
    written = write_container(out_path, fields, [(s, arrays[s.name]) for s in specs], version)
    if written != container_bytes(fields, specs, version):  # pragma: no cover - tested
        raise ArtifactError("internal error: written size differs from the planned size")
    log.debug("wrote %s (%d bytes, %s)", out_path, written, value_dtype)
    loaded = load_artifact(out_path)
    return ExportResult(out_path, written, loaded.breakdown(), loaded.info)


def _head_arrays(model: torch.nn.Module, specs: list[SectionSpec],
                 table_dtype: str) -> dict[str, np.ndarray]:
    """Arrays of the head, first-order and calibration sections, in the dtypes ``specs`` plan."""
    state = head_tensors(model)
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        kind, _, name = spec.name.partition("/")
        if spec.name == CALIBRATION_SECTION:
            arrays[spec.name] = np.array(calibration_of(model), dtype=np.float32)
        elif kind == "head":
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
    value_dtype = v1_value_dtype(model, value_dtype)
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


def _storage(model: torch.nn.Module, value_dtype: str | None, head_dtype: str | None,
             recorded_head: str | None) -> tuple[str, str]:
    """(value dtype, head dtype) an export writes: a plan's own, or the ones asked for."""
    tiers = getattr(model.embedding, "tiers", None)
    if tiers is not None:
        own = "+".join(t.label for t in tiers)
        if value_dtype is not None and value_dtype != own:
            raise ArtifactError(f"this cut's plan stores its values as {own}, not {value_dtype}: "
                                f"the precisions are the cut's (prune with --values / --head)")
        value_dtype = "fp32"  # a one-tier fp32 plan is written as v1, the others by their tiers
    if recorded_head is not None and head_dtype not in (None, recorded_head):
        raise ArtifactError(f"this cut's head is stored as {recorded_head}, not {head_dtype}: "
                            f"the precisions are the cut's (prune with --values / --head)")
    return value_dtype or "fp32", head_dtype or recorded_head or "fp32"


def _resolve_source(source: Any, metadata: Mapping[str, Any] | None, include_feature_map: bool
                    ) -> tuple[torch.nn.Module, dict[str, Any], str | None]:
    """(model, artifact metadata, recorded head dtype or None) of an export's source."""
    meta = dict(metadata or {})
    if isinstance(source, torch.nn.Module):
        return source, meta, None
    if hasattr(source, "model") and hasattr(source, "info"):  # a PruneResult
        model, record = source.model, source.info
    else:
        path = Path(source)
        if not path.is_dir():
            raise ArtifactError(f"{path}: not a pruned directory (expected pruned.json + "
                                "model.safetensors) nor a model")
        pruned = load_pruned(path, device="cpu")
        model, record = pruned.model, pruned.info
    info = {k: record[k] for k in INFO_KEYS if k in record}
    if include_feature_map and "feature_map" not in meta:
        feature_map = feature_map_of(record.get("dataset", {}).get("path"))
        if feature_map is not None:
            meta["feature_map"] = feature_map
    head = record.get("head_dtype")  # None: a cut from before plans recorded their head
    return model, {**info, **meta}, None if head is None else str(head)


__all__ = ["Artifact", "ExportResult", "SectionSpec", "embedding_state", "export_artifact",
           "feature_map_of", "load_artifact"]
