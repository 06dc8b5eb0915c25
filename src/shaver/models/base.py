"""The model interface every stage after training relies on.

A shaver model is an ``nn.Module`` with

* ``field_dims``: list of rows per field; ``embed_dim``: d; ``layout``: the fields' slots
  (:mod:`shaver.layout`: a multi-valued field, a *bag*, takes ``max_len`` slots; without
  bags one slot per field, and everything below reads "fields" for "slots");
* ``embedding``: a module mapping global ids LongTensor (batch, slots) (>= 0) to
  ``(batch, slots, d)``, with a ``weight`` tensor (num_features, d). Attribution and pruning
  swap it for a masked or compressed module without touching anything else;
* ``embed(x)``: ``embedding`` of ``x`` (batch, slots) whose bag pads (-1) read row 0;
* ``head(emb, x, w=None)``: ``emb`` (batch, slots, d), ``x`` (batch, slots) and the bags'
  value weights ``w`` (batch, slots) or None -> logits (batch,). A head pools each bag
  (:meth:`CTRModel.pooled`: the pooled vector is the field's embedding) and reads ``x`` for
  first-order (per-id) terms; it must not read the embedding table;
* ``forward(x, w=None) = head(embed(x), x, w)``, then ``scale * logit + bias`` when the model
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

from shaver.errors import ModelError, ShaverError
from shaver.layout import FieldLayout
from shaver.models.pooling import Pooling


class CTRModel(nn.Module):
    """Base class: one flat embedding table over all fields, and a dense head."""

    #: Registry name of the model (set by subclasses).
    name: str = "base"
    #: ``forward`` applies :func:`set_calibration`'s pair.
    applies_calibration = True

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16,
                 layout: Sequence[dict[str, Any]] | FieldLayout | None = None):
        super().__init__()
        if not field_dims or any(int(d) <= 0 for d in field_dims):
            raise ModelError(f"field_dims must be positive integers, got {list(field_dims)}")
        if embed_dim <= 0:
            raise ModelError(f"embed_dim must be positive, got {embed_dim}")
        self.field_dims = [int(d) for d in field_dims]
        self.embed_dim = int(embed_dim)
        self.num_fields = len(self.field_dims)
        self.num_features = int(sum(self.field_dims))
        try:
            self.layout = FieldLayout.from_json(self.num_fields, layout)
        except ShaverError as exc:
            raise ModelError(str(exc)) from None
        self.num_slots = self.layout.num_slots
        self.pooling = Pooling(self.layout) if self.layout.has_bags else None
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

    def head(self, emb: torch.Tensor, x: torch.Tensor,
             w: torch.Tensor | None = None) -> torch.Tensor:
        """emb: (batch, slots, d), x: LongTensor (batch, slots), w: bag weights or None ->
        logits (batch,)."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: LongTensor (batch, slots) (bag pads -1) -> ``embedding`` (batch, slots, d),
        zeros in pads. Only real ids are looked up, so a pad never shows in the table's
        gradient (lazy Adam updates exactly the rows a batch holds)."""
        if self.pooling is None:
            return self.embedding(x)
        valid = x >= 0
        rows = self.embedding(x[valid])
        emb = rows.new_zeros(*x.shape, rows.shape[-1])
        emb[valid] = rows
        return emb

    def coefficients(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor | None:
        """float32 (batch, slots) pooling coefficients (:mod:`shaver.layout`), or None when
        the model has no bag (every coefficient is 1)."""
        return None if self.pooling is None else self.pooling.coefficients(x, w)

    def pooled(self, emb: torch.Tensor, x: torch.Tensor, w: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(emb (batch, slots, d) pooled into (batch, fields, d), the coefficients or None)."""
        if self.pooling is None:
            return emb, None
        coef = self.pooling.coefficients(x, w)
        return self.pooling(emb, coef), coef

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """x: LongTensor (batch, slots) of global ids (bag pads -1), w: float (batch, slots)
        bag value weights or None -> logits (batch,)."""
        emb = self.embed(x)  # a head written as head(emb, x) still works without weights
        return calibrate(self, self.head(emb, x) if w is None else self.head(emb, x, w))

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments, with the registry ``name`` (and the ``layout``
        when the model has bags)."""
        out = {"name": self.name, "field_dims": self.field_dims, "embed_dim": self.embed_dim}
        if self.layout.has_bags:
            out["layout"] = self.layout.to_json()
        return out


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
