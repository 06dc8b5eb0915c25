"""Pruned directories: save and load a pruned model (format ``shaver-pruned`` version 1).

Layout::

    model.safetensors   the model's state dict; the embedding as
                        embedding.weight (n, d) kept values (pruned = 0),
                        embedding.mask_packed uint8 (ceil(n*d/8),) bits (see mask.pack_mask),
                        embedding.codebook (m, d); every head tensor under its usual name.
    pruned.json         {"format": "shaver-pruned", "format_version": 1, "model": config,
                         "dataset": {"path", "fingerprint"}, "model_fingerprint": base model's,
                         "budget": {"kind", "value", "label"}, "scorer", "order", "codebook",
                         "placeholder", "kept", "total", "finetuned", "metrics",
                         "artifact_bytes", ..., "calibration": {"scale", "bias"} when the
                         model carries one (see shaver.models.base.set_calibration)}

Writes go to a temporary directory renamed into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from shaver.errors import CheckpointError, ShaverError
from shaver.fileio import check_format, read_json, temp_prefix
from shaver.models.base import calibration_of, set_calibration
from shaver.models.registry import build_model
from shaver.table.mask import MaskedEmbedding, pack_mask, unpack_mask
from shaver.table.tiers import tiered_embedding_from_state
from shaver.train.device import pick_device

FORMAT = "shaver-pruned"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
INFO_FILE = "pruned.json"
#: Keys a caller must give in ``info`` (the rest is derived from the model).
REQUIRED_INFO = ("dataset", "model_fingerprint", "budget", "scorer", "order", "codebook",
                 "placeholder")


@dataclass
class PrunedRun:
    """A loaded pruned directory: ``model`` (embedding a MaskedEmbedding, eval mode)."""

    model: nn.Module
    info: dict[str, Any]
    path: Path


def pruned_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The on-disk tensors of a pruned model: its state dict with the mask packed to bits."""
    emb = model.embedding
    if not isinstance(emb, MaskedEmbedding):
        raise CheckpointError(
            f"save_pruned expects a model whose embedding is a MaskedEmbedding, "
            f"got {type(emb).__name__}"
        )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    mask = state.pop("embedding.mask")
    state["embedding.mask_packed"] = torch.from_numpy(pack_mask(mask.numpy()))
    return state


def save_pruned(out_dir: str | os.PathLike[str], model: nn.Module,
                info: Mapping[str, Any]) -> Path:
    """Write ``model`` (with a MaskedEmbedding) and ``info`` as a pruned directory.

    ``info`` must hold the keys in :data:`REQUIRED_INFO`; ``kept``/``total`` are taken from
    the mask, ``model`` from ``model.config()``. An existing pruned directory at ``out_dir``
    is replaced only once the new one is complete; any other existing non-empty path is refused.
    """
    out = Path(out_dir)
    missing = [k for k in REQUIRED_INFO if k not in info]
    if missing:
        raise CheckpointError(f"save_pruned: info lacks {', '.join(missing)}")
    occupied = out.is_dir() and any(out.iterdir()) or (out.exists() and not out.is_dir())
    if occupied and not (out / INFO_FILE).is_file():
        raise CheckpointError(f"{out}: exists and is not a pruned directory; not overwriting")
    state = pruned_state_dict(model)
    emb = model.embedding
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model.config(),
        "finetuned": False,
        "metrics": {},
        **dict(info),
        "kept": emb.kept,
        "total": emb.num_embeddings * emb.embedding_dim,
    }
    if getattr(emb, "tiers", None) is not None:  # a TieredEmbedding: its tier specs
        meta["tiers"] = [spec.to_json() for spec in emb.tiers]
    meta.pop("calibration", None)  # the model's own, never a stale one from ``info``
    if (cal := calibration_of(model)) is not None:
        meta["calibration"] = {"scale": cal[0], "bias": cal[1]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), dir=out.parent))
    try:
        save_file(state, str(tmp / MODEL_FILE), metadata={"format": FORMAT})
        (tmp / INFO_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=temp_prefix(f"{out.name}.old"), dir=out.parent))
    os.replace(out, old / "dir")
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / "dir", out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``pruned.json`` of a pruned directory."""
    info_path = Path(path) / INFO_FILE
    if not info_path.is_file():
        raise CheckpointError(f"{Path(path)}: not a pruned directory ({INFO_FILE} is missing)")
    info = read_json(info_path, CheckpointError)
    check_format(info, fmt=FORMAT, version=FORMAT_VERSION, where=info_path, error=CheckpointError)
    if not isinstance(info.get("model"), dict):
        raise CheckpointError(f"{info_path}: field 'model' (the model config) is missing")
    return info


def _default_builder(config: dict[str, Any]) -> nn.Module:
    return build_model(config)


def load_pruned(
    path: str | os.PathLike[str],
    device: str | torch.device | None = None,
    *,
    builder: Callable[[dict[str, Any]], nn.Module] | None = None,
) -> PrunedRun:
    """Load a pruned directory; the model is in eval mode on ``device`` (None / "auto":
    CUDA when available, else CPU).

    ``builder`` rebuilds the base model from its config (default:
    ``shaver.models.registry.build_model``).
    """
    path = Path(path)
    info = read_info(path)
    try:
        model = (builder or _default_builder)(info["model"])
    except ShaverError as exc:
        raise CheckpointError(f"{path / INFO_FILE}: cannot rebuild the model ({exc})") from exc
    try:
        state = load_file(str(path / MODEL_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path / MODEL_FILE}: unreadable ({exc})") from exc
    _install_masked_embedding(model, state, path, info.get("tiers"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path / MODEL_FILE}: does not match the model config ({exc})") \
            from exc
    _restore_calibration(model, info.get("calibration"), path)
    model = model.to(pick_device(device)).eval()
    return PrunedRun(model=model, info=info, path=path)


def _restore_calibration(model: nn.Module, cal: Any, path: Path) -> None:
    if cal is None:
        return
    try:
        set_calibration(model, cal["scale"], cal["bias"])
    except (TypeError, KeyError, ShaverError) as exc:
        raise CheckpointError(f"{path / INFO_FILE}: malformed calibration {str(cal)[:80]}, expected "
                              '{"scale": number, "bias": number}') from exc


def _install_masked_embedding(model: nn.Module, state: dict[str, torch.Tensor], path: Path,
                              tiers: Any = None) -> None:
    needed = ("embedding.weight", "embedding.mask_packed", "embedding.codebook")
    lacking = [k for k in needed if k not in state]
    if lacking:
        raise CheckpointError(f"{path / MODEL_FILE}: lacks tensors {', '.join(lacking)}")
    weight = state["embedding.weight"]
    try:
        mask = unpack_mask(state.pop("embedding.mask_packed").numpy(), weight.shape)
    except ShaverError as exc:
        raise CheckpointError(f"{path / MODEL_FILE}: bad embedding.mask_packed ({exc})") from exc
    state["embedding.mask"] = torch.from_numpy(np.ascontiguousarray(mask))
    try:
        if tiers is not None or "embedding.tier_map" in state:
            model.embedding = tiered_embedding_from_state(state, tiers, model.field_dims)
        else:
            model.embedding = MaskedEmbedding(weight, torch.from_numpy(mask),
                                              state["embedding.codebook"], model.field_dims)
    except ShaverError as exc:
        raise CheckpointError(f"{path / MODEL_FILE}: {exc}") from exc
