"""The model interface every stage after training relies on.

A shaver model is an ``nn.Module`` with

* ``field_dims``: list of rows per field; ``embed_dim``: d;
* ``embedding``: a module mapping global ids ``x`` LongTensor (batch, fields) to
  ``(batch, fields, d)``, with a ``weight`` tensor (num_features, d). Attribution and pruning
  swap it for a masked or compressed module without touching anything else;
* ``head(emb, x)``: ``emb`` (batch, fields, d) and ``x`` (batch, fields) -> logits (batch,).
  ``x`` is there for first-order (per-id) terms; a head must not read the embedding table;
* ``forward(x) = head(embedding(x), x)``, then ``scale * logit + bias`` when the model
  carries a calibration (:func:`set_calibration`; see :mod:`shaver.runtime.calibration`);
* ``config()``: a JSON-able dict from which ``shaver.models.registry.build_model`` rebuilds it.

Ids are GLOBAL: the prepared dataset already applied the field offsets.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from shaver.errors import ModelError


class CTRModel(nn.Module):
    """Base class: one flat embedding table over all fields, and a dense head."""

    #: Registry name of the model (set by subclasses).
    name: str = "base"
    #: ``forward`` applies :func:`set_calibration`'s pair.
    applies_calibration = True

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16):
        super().__init__()
        if not field_dims or any(int(d) <= 0 for d in field_dims):
            raise ModelError(f"field_dims must be positive integers, got {list(field_dims)}")
        if embed_dim <= 0:
            raise ModelError(f"embed_dim must be positive, got {embed_dim}")
        self.field_dims = [int(d) for d in field_dims]
        self.embed_dim = int(embed_dim)
        self.num_fields = len(self.field_dims)
        self.num_features = int(sum(self.field_dims))
        self.embedding: nn.Module = nn.Embedding(self.num_features, self.embed_dim)
        offsets = torch.tensor([0, *self.field_dims[:-1]], dtype=torch.long).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer(
            "row_field",
            torch.repeat_interleave(torch.arange(self.num_fields), torch.tensor(self.field_dims)),
            persistent=False,
        )
        # [scale, bias] float32 or None; non-persistent: state dicts never carry it
        self.register_buffer("calibration", None, persistent=False)

    def head(self, emb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """emb: (batch, fields, d), x: LongTensor (batch, fields) -> logits (batch,)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: LongTensor (batch, fields) of global ids -> logits (batch,)."""
        return calibrate(self, self.head(self.embedding(x), x))

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, with the registry ``name``."""
        return {"name": self.name, "field_dims": self.field_dims, "embed_dim": self.embed_dim}


def check_model_interface(model: Any) -> None:
    """Raise :class:`ModelError` naming what ``model`` lacks of the shaver interface."""
    missing = []
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    emb = getattr(model, "embedding", None)
    if emb is None or not callable(emb):
        missing.append("`embedding` (a module mapping ids (batch, fields) to (batch, fields, d))")
    elif not isinstance(getattr(emb, "weight", None), torch.Tensor) or emb.weight.dim() != 2:
        missing.append("`embedding.weight` (a 2-D tensor: num_features x d)")
    if not callable(getattr(model, "head", None)):
        missing.append("`head(emb, x)` returning logits (batch,)")
    if not getattr(model, "field_dims", None):
        missing.append("`field_dims` (rows per field)")
    if missing:
        raise ModelError(
            f"{type(model).__name__} lacks the shaver model interface: missing "
            + "; ".join(missing)
            + ". See shaver.models.base for the contract."
        )
    if sum(model.field_dims) != model.embedding.weight.shape[0]:
        raise ModelError(
            f"{type(model).__name__}: sum(field_dims) = {sum(model.field_dims)} but the "
            f"embedding table has {model.embedding.weight.shape[0]} rows"
        )


def copy_without_embedding(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that does not copy its (big) embedding table: the copy's
    ``embedding`` is the original module, for the caller to replace or keep."""
    emb = model.embedding
    model.embedding = nn.Identity()
    try:
        clone = copy.deepcopy(model)
    finally:
        model.embedding = emb
    clone.embedding = emb
    return clone


def calibrate(model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (batch,) through ``model``'s calibration, if it carries one (else as is)."""
    cal = getattr(model, "calibration", None)
    return logits if cal is None else logits * cal[0] + cal[1]


def set_calibration(model: nn.Module, scale: float, bias: float) -> None:
    """Make ``model``'s forward return ``scale * logit + bias`` (stored as float32 in a
    non-persistent buffer: state dicts, and so ``load_state_dict(strict=True)`` of a rebuilt
    model, are unchanged; copies keep it). Fit the pair on the UNcalibrated logits
    (:func:`clear_calibration` first), e.g. with
    :func:`shaver.runtime.calibration.fit_logit_calibration`."""
    if not getattr(type(model), "applies_calibration", False):
        raise ModelError(f"{type(model).__name__}'s forward does not apply a calibration "
                         "(expected a shaver CTRModel or TorchFMAdapter)")
    pair = torch.tensor([float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool)
                         else math.nan for v in (scale, bias)], dtype=torch.float32)
    if not bool(torch.isfinite(pair).all()):
        raise ModelError(f"calibration must be two finite float32 numbers, got scale={scale!r}, "
                         f"bias={bias!r}")
    ref = next(iter(model.parameters()), None)
    model.calibration = pair if ref is None else pair.to(ref.device)


def calibration_of(model: nn.Module) -> tuple[float, float] | None:
    """``(scale, bias)`` of ``model``'s calibration (the float32 values it applies), or None."""
    cal = getattr(model, "calibration", None)
    return None if cal is None else (float(cal[0]), float(cal[1]))


def clear_calibration(model: nn.Module) -> None:
    """Remove ``model``'s calibration: its forward returns the head's logits again."""
    if getattr(model, "calibration", None) is not None:
        model.calibration = None
