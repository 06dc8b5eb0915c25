"""Device choice: CUDA when present, never hard-coded."""

from __future__ import annotations

import torch

from shaver.errors import TrainingError


def pick_device(pref: str | torch.device | None = None) -> torch.device:
    """``None`` / ``"auto"`` -> ``cuda`` if available, else ``cpu``; otherwise the named device.

    Raises :class:`TrainingError` when CUDA is asked for but not available.
    """
    if isinstance(pref, torch.device):
        pref = str(pref)
    if pref is None or pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise TrainingError(f"unknown device {pref!r}: expected auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device {pref!r} requested but CUDA is not available here")
    return device
