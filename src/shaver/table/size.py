"""Exact artifact sizes, before writing anything (used by byte budgets).

``predict_artifact_bytes(model, mask)`` lays out the same sections, header included, that
:func:`shaver.deploy.artifact.export_artifact` writes, so the number is the file size to the
byte. Only the keep-mask's per-row counts are needed (one vectorised pass), plus O(fields)
work: well under 0.1 s for a 1M x 16 mask.

What the size does and does not depend on:

* model config, field_dims, d, head and first-order tensor shapes, value dtype, the mask;
* the feature map (dataset meta + vocabularies) when ``metadata["feature_map"]`` is given
  (a dict, or its bytes from :func:`encode_feature_map` to avoid re-encoding it per call);
* NOT on the volatile metadata (budget, metrics, provenance...): it lives in the fixed-size
  ``info`` section of :data:`INFO_BYTES` bytes (JSON padded with spaces); export raises
  :class:`ArtifactError` if it does not fit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from shaver.data.feature_map import feature_map_of
from shaver.errors import ArtifactError
from shaver.models.base import calibration_of, check_model_interface
from shaver.runtime.calibration import FORM as CALIBRATION_FORM
from shaver.runtime.calibration import SECTION as CALIBRATION_SECTION
from shaver.runtime.container import SectionSpec, container_bytes
from shaver.runtime.headq import (
    check_head_dtype,
    first_order_dtype,
    quantized_in_int8,
    scale_shape,
)
from shaver.runtime.layout import (
    check_value_dtype,
    choose_layouts,
    embedding_specs,
    field_bounds,
    layouts_for_counts,
)
from shaver.runtime.tiered import plan_tiered
from shaver.table.head import head_tensors
from shaver.table.plan import fits_v1, table_plan, v1_value_dtype
from shaver.table.tiers import first_order_dtype as tiers_first_order_dtype

INFO_BYTES = 4096
_TORCH_TO_SECTION = {torch.int64: "i64", torch.uint8: "u8", torch.int8: "i8"}


def encode_feature_map(feature_map: Mapping[str, Any] | bytes) -> bytes:
    """Canonical UTF-8 JSON of a feature map (``{"meta": ..., "vocab": ...}``)."""
    if isinstance(feature_map, bytes):
        return feature_map
    return json.dumps(feature_map, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def feature_map_metadata(dataset: Any) -> dict[str, Any] | None:
    """``{"feature_map": bytes}`` of a prepared dataset (what export adds and the size
    counts), or None without a dataset or when it cannot be opened."""
    if dataset is None:
        return None
    feature_map = feature_map_of(str(dataset.path))
    return None if feature_map is None else {"feature_map": encode_feature_map(feature_map)}


def encode_info(info: Mapping[str, Any]) -> bytes:
    """The fixed-size ``info`` section: JSON padded with spaces to :data:`INFO_BYTES`."""
    try:
        raw = json.dumps(dict(info), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                         allow_nan=False, default=_jsonable).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"artifact metadata is not JSON-serialisable ({exc})") from exc
    if len(raw) > INFO_BYTES:
        raise ArtifactError(f"artifact metadata takes {len(raw)} bytes of JSON, more than the "
                            f"{INFO_BYTES} reserved for it; pass less metadata")
    return raw + b" " * (INFO_BYTES - len(raw))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def head_specs(model: torch.nn.Module, value_dtype: str, head_dtype: str = "fp32",
               calibrated: bool = False) -> list[SectionSpec]:
    """Sections of the first-order tables and of the head.

    First-order tables (float, leading dim n, e.g. DeepFM's ``linear.weight.weight`` (n, 1))
    take :func:`~shaver.runtime.headq.first_order_dtype` of the value and head dtypes: fp32,
    fp16, or int8 with one fp32 scale per field (section ``first_order_scale/<name>``, kind
    first_order); next to a v2 table, ``value_dtype`` is that of
    :func:`shaver.table.tiers.first_order_dtype`. Head tensors follow ``head_dtype``
    (:mod:`shaver.runtime.headq`): fp32, fp16, or int8 matrices with per-output-channel fp32
    scales (``head_scale/<name>``). A model carrying a calibration
    (:func:`shaver.models.base.set_calibration`) adds the section ``calibration``: f32 (2,)
    [scale, bias], kind head, whatever its values.
    """
    n = int(model.embedding.weight.shape[0])
    m = len(model.field_dims)
    table_dtype = first_order_dtype(value_dtype, head_dtype)
    specs = []
    for name, tensor in head_tensors(model).items():
        shape = tuple(int(s) for s in tensor.shape)
        if tensor.is_floating_point():
            if tensor.dim() == 2 and shape[0] == n and n > 1:
                dtype = {"fp32": "f32", "fp16": "f16", "int8": "i8"}[table_dtype]
                specs.append(SectionSpec(f"first_order/{name}", "first_order", dtype, shape))
                if table_dtype == "int8":
                    specs.append(SectionSpec(f"first_order_scale/{name}", "first_order", "f32",
                                             (m,)))
                continue
            specs += _float_head_specs(name, shape, head_dtype)
        elif tensor.dtype in _TORCH_TO_SECTION:
            specs.append(SectionSpec(f"head/{name}", "head", _TORCH_TO_SECTION[tensor.dtype], shape))
        else:
            raise ArtifactError(f"head tensor {name} has unsupported dtype {tensor.dtype}")
    if calibrated or calibration_of(model) is not None:
        specs.append(SectionSpec(CALIBRATION_SECTION, "head", "f32", (2,)))
    return specs


def _float_head_specs(name: str, shape: tuple[int, ...], head_dtype: str) -> list[SectionSpec]:
    if head_dtype == "int8" and quantized_in_int8(name, shape):
        return [SectionSpec(f"head/{name}", "head", "i8", shape),
                SectionSpec(f"head_scale/{name}", "head", "f32", scale_shape(name, shape))]
    return [SectionSpec(f"head/{name}", "head", "f16" if head_dtype == "fp16" else "f32", shape)]


def plan_artifact(model: torch.nn.Module, mask: np.ndarray, value_dtype: str,
                  metadata: Mapping[str, Any] | None, head_dtype: str = "fp32"
                  ) -> tuple[dict[str, Any], list[SectionSpec]]:
    """Header fields and section specs of the artifact (no data).

    Format version 2 adds what version 1 cannot describe: ``"head": {"dtype": ...}`` for a
    quantised head, ``"tiers"`` in the embedding for int4 / int2 values, row scales or
    several precision tiers (:mod:`shaver.runtime.tiered`). Anything else leaves the fields,
    and so the file, exactly as format version 1 had them.
    """
    check_model_interface(model)
    check_head_dtype(head_dtype)
    mask = np.asarray(mask)
    n, d = (int(s) for s in model.embedding.weight.shape)
    if mask.dtype != np.bool_ or mask.shape != (n, d):
        raise ArtifactError(f"mask must be bool of shape ({n}, {d}), got {mask.dtype} {mask.shape}")
    field_dims = [int(v) for v in model.field_dims]
    value_dtype = v1_value_dtype(model, value_dtype)
    plan = table_plan(model, mask, value_dtype)
    if plan is None:
        check_value_dtype(value_dtype)
        layouts, kept = choose_layouts(mask, field_dims, value_dtype)
        return plan_for_counts(model, kept, value_dtype, metadata, head_dtype, layouts)
    embedding, specs = plan_tiered(plan.tier_map, field_dims, d, plan.tiers)
    specs += head_specs(model, tiers_first_order_dtype(plan.tiers), head_dtype)
    specs += metadata_specs(metadata)
    return _fields(model, embedding, head_dtype), specs


def plan_for_counts(model: torch.nn.Module, kept: np.ndarray, value_dtype: str,
                    metadata: Mapping[str, Any] | None, head_dtype: str = "fp32",
                    layouts: list[str] | None = None
                    ) -> tuple[dict[str, Any], list[SectionSpec]]:
    """:func:`plan_artifact` of a version-1 table from the kept entries per field (all the
    size depends on)."""
    check_model_interface(model)
    check_value_dtype(value_dtype)
    check_head_dtype(head_dtype)
    d = int(model.embedding.weight.shape[1])
    embedding, specs = _v1_table([int(v) for v in model.field_dims], d, kept, value_dtype,
                                 layouts)
    specs += head_specs(model, value_dtype, head_dtype)
    specs += metadata_specs(metadata)
    return _fields(model, embedding, head_dtype), specs


def _fields(model: torch.nn.Module, embedding: dict[str, Any], head_dtype: str,
            calibrated: bool = False) -> dict[str, Any]:
    fields = {"model": model.config(), "embedding": embedding}
    if head_dtype != "fp32":
        fields["head"] = {"dtype": head_dtype}
    if calibrated or calibration_of(model) is not None:
        fields["calibration"] = CALIBRATION_FORM
    return fields


def _v1_table(field_dims: list[int], d: int, kept: np.ndarray, value_dtype: str,
              layouts: list[str] | None = None) -> tuple[dict[str, Any], list[SectionSpec]]:
    """(header description, section specs) of a version-1 table from its kept entries per
    field (all its size depends on)."""
    if layouts is None:
        layouts = layouts_for_counts(kept, field_dims, d, value_dtype)
    embedding = {"dim": d, "field_dims": field_dims, "layouts": layouts,
                 "value_dtype": value_dtype}
    return embedding, embedding_specs(field_dims, d, layouts, kept, value_dtype)


def metadata_specs(metadata: Mapping[str, Any] | None) -> list[SectionSpec]:
    """The feature map (when ``metadata`` has one) and the fixed-size info section."""
    metadata = dict(metadata or {})
    feature_map = metadata.pop("feature_map", None)
    specs = []
    if feature_map is not None:
        specs.append(SectionSpec("feature_map", "metadata", "json",
                                 (len(encode_feature_map(feature_map)),)))
    encode_info(metadata)  # fails early when the volatile metadata cannot fit
    specs.append(SectionSpec("info", "metadata", "json", (INFO_BYTES,)))
    return specs


def plan_bytes(model: torch.nn.Module, tier_map: np.ndarray, tiers: Sequence[Any], *,
               head_dtype: str = "fp32", metadata: Mapping[str, Any] | None = None,
               calibrated: bool = False) -> tuple[int, int]:
    """THE size oracle of a plan: (artifact bytes, table bytes) of ``model`` cut to this tier
    map and these tier specs, with its head in ``head_dtype`` (and a logit recalibration when
    ``calibrated``), exactly as export writes the model :func:`shaver.table.tiers.plan_copy`
    builds, before anything is built: format v1 when the plan fits it
    (:func:`~shaver.table.plan.fits_v1`), else v2 (:mod:`shaver.runtime.tiered`)."""
    check_head_dtype(head_dtype)
    d = int(model.embedding.weight.shape[1])
    field_dims = [int(v) for v in model.field_dims]
    if fits_v1(tiers):
        kept = np.add.reduceat(np.count_nonzero(tier_map, axis=1),
                               field_bounds(field_dims)[:-1])
        embedding, specs = _v1_table(field_dims, d, kept, "fp32")
        first_order = "fp32"
    else:
        embedding, specs = plan_tiered(tier_map, field_dims, d, list(tiers))
        first_order = tiers_first_order_dtype(tiers)
    table = table_bytes(specs)
    specs += head_specs(model, first_order, head_dtype, calibrated)
    specs += metadata_specs(metadata)
    fields = _fields(model, embedding, head_dtype, calibrated)
    return container_bytes(fields, specs, artifact_version(fields)), table


def artifact_version(fields: Mapping[str, Any]) -> int:
    """The lowest container version describing ``fields``: 2 with a quantised head, a
    calibration or a tiered table, else 1."""
    return 2 if "head" in fields or "calibration" in fields or "tiers" in fields["embedding"] \
        else 1


TABLE_KINDS = ("values", "index", "scales", "codebook")


def table_bytes(specs: list[SectionSpec]) -> int:
    """Bytes of the embedding table's sections (kept values, index, scales, codebook)."""
    return sum(s.nbytes for s in specs if s.kind in TABLE_KINDS)


def predict_artifact_bytes(model: torch.nn.Module, mask: np.ndarray, *, value_dtype: str = "fp32",
                           metadata: Mapping[str, Any] | None = None,
                           head_dtype: str = "fp32") -> int:
    """Exact size in bytes of the artifact ``export_artifact`` writes for ``model`` + ``mask``.

    mask: bool (n, d), True = kept. ``metadata``: see the module docstring (only its
    ``feature_map`` entry changes the size). ``head_dtype``: fp32 | fp16 | int8.
    """
    fields, specs = plan_artifact(model, mask, value_dtype, metadata, head_dtype)
    return container_bytes(fields, specs, artifact_version(fields))
