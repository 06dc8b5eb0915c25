"""Run directories: ``config.json`` + ``model.safetensors``. Loading never unpickles.

config.json = {"format": "shaver-run", "format_version": 1, "model": model.config(),
"dataset": {"path", "fingerprint"}, "model_fingerprint", "metrics", "seed", "train"}.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from shaver import __version__
from shaver.data.store import PreparedDataset, open_dataset
from shaver.errors import CheckpointError, FingerprintMismatch, ModelError
from shaver.fileio import atomic_path, check_format, read_json, write_text_atomic
from shaver.models.base import CTRModel
from shaver.models.registry import build_model
from shaver.train.device import pick_device

RUN_FORMAT = "shaver-run"
RUN_FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def model_fingerprint(model: nn.Module) -> str:
    """16 hex chars of SHA-256 over the state dict in sorted key order (names, shapes,
    dtypes, bytes). Equal weights give equal fingerprints on any device."""
    h = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors, ready for safetensors."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def atomic_save_tensors(path: Path, tensors: Mapping[str, torch.Tensor],
                        metadata: Mapping[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` to a temporary file, then renamed over ``path``."""
    with atomic_path(path) as tmp:
        save_file(dict(tensors), tmp, metadata=dict(metadata or {}))


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def save_run(
    out_dir: str | os.PathLike[str],
    model: CTRModel,
    *,
    dataset: PreparedDataset,
    metrics: Mapping[str, Any],
    seed: int,
    train_config: Mapping[str, Any],
) -> Path:
    """Write ``model`` and its config into ``out_dir`` (created if needed); returns the dir.

    Each file is written atomically; the weights go first, so an interrupted save never
    leaves a config.json describing weights that are not there.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = model_fingerprint(model)
    atomic_save_tensors(out / WEIGHTS_NAME, state_tensors(model),
                        {"format": RUN_FORMAT, "model_fingerprint": fingerprint})
    config = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "library_version": __version__,
        "model": model.config(),
        "dataset": {"path": str(Path(dataset.path).resolve()), "fingerprint": dataset.fingerprint},
        "model_fingerprint": fingerprint,
        "metrics": json_safe(dict(metrics)),
        "seed": int(seed),
        "train": dict(train_config),
    }
    text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_text_atomic(out / CONFIG_NAME, text)
    return out


@dataclass
class Run:
    """A loaded run: ``model`` (eval mode, on its device), ``config`` (config.json), ``path``."""

    model: CTRModel
    config: dict[str, Any]
    path: Path

    @property
    def dataset_fingerprint(self) -> str:
        return str(self.config["dataset"]["fingerprint"])

    @property
    def model_fingerprint(self) -> str:
        return str(self.config["model_fingerprint"])


def read_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """config.json of a run directory, validated; :class:`CheckpointError` when unusable."""
    path = Path(run_dir) / CONFIG_NAME
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir}: not a run directory (it "
                              f"{'is a file' if Path(run_dir).exists() else 'does not exist'})")
    config = read_json(path, CheckpointError, missing="missing (not a shaver run directory)")
    check_format(config, fmt=RUN_FORMAT, version=RUN_FORMAT_VERSION, where=path,
                 error=CheckpointError)
    for key in ("model", "dataset", "model_fingerprint"):
        if key not in config:
            raise CheckpointError(f"{path}: lacks the {key!r} entry")
    return config


def load_weights(model: nn.Module, path: Path, prefix: str = "") -> None:
    """Load a safetensors state dict (keys optionally under ``prefix``) into ``model``."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors file ({exc})") from exc
    if prefix:
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model ({exc})") from exc


def load_run(run_dir: str | os.PathLike[str], device: str | torch.device | None = None) -> Run:
    """Rebuild the model of a run directory, load its weights and check its fingerprint."""
    path = Path(run_dir)
    config = read_run_config(path)
    try:
        model = build_model(config["model"])
    except ModelError as exc:
        raise CheckpointError(f"{path / CONFIG_NAME}: bad model config ({exc})") from exc
    load_weights(model, path / WEIGHTS_NAME)
    found = model_fingerprint(model)
    if found != config["model_fingerprint"]:
        raise FingerprintMismatch(
            f"{path / WEIGHTS_NAME}: weights have fingerprint {found} but config.json "
            f"expects {config['model_fingerprint']} (files from different runs?)")
    model.to(pick_device(device)).eval()
    return Run(model=model, config=config, path=path)


def check_dataset(dataset: PreparedDataset, fingerprint: str, what: str) -> None:
    """Raise :class:`FingerprintMismatch` unless ``dataset`` has ``fingerprint``."""
    if dataset.fingerprint != fingerprint:
        raise FingerprintMismatch(
            f"{dataset.path}: dataset fingerprint {dataset.fingerprint}, but {what} was made "
            f"for a dataset with fingerprint {fingerprint} (another feature map)")


def open_run_dataset(run: Run, data_dir: str | os.PathLike[str] | None = None) -> PreparedDataset:
    """Reopen the dataset ``run`` was trained on (or ``data_dir``), checking its fingerprint."""
    path = Path(data_dir) if data_dir is not None else Path(run.config["dataset"]["path"])
    if data_dir is None and not path.exists():
        raise CheckpointError(
            f"run {run.path} was trained on {path}, which no longer exists; "
            "pass the dataset directory explicitly (--data)")
    dataset = open_dataset(path)
    check_dataset(dataset, run.dataset_fingerprint, f"run {run.path}")
    return dataset
