"""Resumable training state: one safetensors file with the current weights, the best weights
and the optimizer's tensors, and its JSON metadata (epoch, history, early-stopping counters,
optimizer hyper-parameters). No pickle anywhere.

The random state needs no saving: every epoch reseeds from ``(seed, epoch, rank)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shaver.errors import CheckpointError
from shaver.fileio import read_tensors
from shaver.train.checkpoint import atomic_save_tensors, json_safe, state_tensors

STATE_DIR = "checkpoint"
STATE_NAME = "train_state.safetensors"


@dataclass
class Progress:
    """Counters of a training run that a resume must restore."""

    epoch: int = 0  # epochs completed
    best_auc: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def state_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / STATE_DIR / STATE_NAME


def save_state(out_dir: str | Path, model: nn.Module, best: dict[str, torch.Tensor],
               optimizer: torch.optim.Optimizer, progress: Progress,
               identity: dict[str, Any]) -> Path:
    """Write the training state atomically under ``out_dir/checkpoint/``."""
    path = state_path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in state_tensors(model).items()}
    tensors.update({f"best.{k}": v.detach().cpu().clone() for k, v in best.items()})
    opt = optimizer.state_dict()
    for idx, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"progress": json.dumps(json_safe(asdict(progress))),
            "param_groups": json.dumps(opt["param_groups"]),
            "identity": json.dumps(identity, sort_keys=True)}
    atomic_save_tensors(path, tensors, meta)
    return path


def load_state(out_dir: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               identity: dict[str, Any]) -> tuple[Progress, dict[str, torch.Tensor]]:
    """Restore model and optimizer from ``out_dir``; returns progress and the best weights.

    Raises :class:`CheckpointError` when the state is missing, corrupt, or was written for
    another model, dataset or seed (``identity``).
    """
    path = state_path(out_dir)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state to resume from")
    tensors, meta = read_tensors(path, CheckpointError, "corrupt training state")
    try:
        saved_identity = json.loads(meta["identity"])
        progress = Progress(**json.loads(meta["progress"]))
        groups = json.loads(meta["param_groups"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt training state ({exc})") from exc
    if saved_identity != identity:
        diff = sorted(k for k in set(identity) | set(saved_identity)
                      if identity.get(k) != saved_identity.get(k))
        raise CheckpointError(
            f"{path}: was written for a different {', '.join(diff)} "
            "(resume with the same model, dataset and seed, or use another --out)")
    _load_prefixed(model, tensors, "model.", path)
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    try:
        optimizer.load_state_dict({"state": slots, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: optimizer state does not fit ({exc})") from exc
    return progress, best


def _load_prefixed(model: nn.Module, tensors: dict[str, torch.Tensor], prefix: str,
                   path: Path) -> None:
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(own, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model ({exc})") from exc
