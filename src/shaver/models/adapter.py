"""Bring your own model: wrap a pytorch-fm style model into the shaver interface.

pytorch-fm (rixwew/pytorch-fm) models take LOCAL ids (batch, fields), add per-field offsets
inside ``model.embedding`` (a ``FeaturesEmbedding`` holding ``.embedding``, an
``nn.Embedding``, and ``.offsets``, a NumPy array), and usually return probabilities.
:class:`TorchFMAdapter` exposes that inner table as ``embedding`` (over GLOBAL ids, as every
shaver stage expects) and a ``head(emb, x)`` that runs the wrapped model's own forward with
its embedding lookup replaced by ``emb``, so a swapped (masked, compressed) embedding
reaches the wrapped model's interaction layers unchanged.

An adapted model lives in memory: it has no registry config, so save its weights yourself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from shaver.errors import ModelError
from shaver.layout import FieldLayout
from shaver.models.base import calibrate

OUTPUTS = ("probability", "logit")


class _GivenEmbedding(nn.Module):
    """Stands in for the wrapped model's embedding lookup: returns the block it was given."""

    def __init__(self, emb: torch.Tensor):
        super().__init__()
        self.emb = emb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb


class TorchFMAdapter(nn.Module):
    """Shaver interface over a pytorch-fm style ``model``.

    ``output``: what the wrapped forward returns, ``"probability"`` (pytorch-fm's
    ``torch.sigmoid(...)``; turned back into logits, clamped at 1e-7) or ``"logit"``.
    """

    name = "torchfm"
    applies_calibration = True

    def __init__(self, model: nn.Module, *, output: str = "probability"):
        super().__init__()
        features = getattr(model, "embedding", None)
        table = getattr(features, "embedding", None)
        offsets = getattr(features, "offsets", None)
        if not isinstance(table, nn.Embedding) or offsets is None:
            raise ModelError(
                f"{type(model).__name__} is not pytorch-fm style: expected "
                "`model.embedding.embedding` (nn.Embedding) and `model.embedding.offsets`")
        if output not in OUTPUTS:
            raise ModelError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        starts = np.asarray(offsets, dtype=np.int64).reshape(-1)
        dims = np.diff(np.append(starts, table.num_embeddings))
        if len(starts) == 0 or starts[0] != 0 or (dims <= 0).any():
            raise ModelError(f"embedding offsets {starts.tolist()} do not describe "
                             f"{table.num_embeddings} rows split into fields")
        self.inner = model
        self.output = output
        self.field_dims = [int(d) for d in dims]
        self.num_fields = len(self.field_dims)
        self.num_features = int(table.num_embeddings)
        self.embed_dim = int(table.embedding_dim)
        self.layout = FieldLayout.single(self.num_fields)
        self.num_slots = self.num_fields
        self.pooling = None
        self.register_buffer("offsets", torch.from_numpy(starts), persistent=False)
        self.embedding: nn.Module = table
        self.register_buffer("calibration", None, persistent=False)  # see set_calibration

    def head(self, emb: torch.Tensor, x: torch.Tensor,
             w: torch.Tensor | None = None) -> torch.Tensor:
        """emb: (batch, fields, d), x: LongTensor (batch, fields) GLOBAL ids -> logits (batch,).
        (pytorch-fm models have no bags: ``w`` must be None.)"""
        if w is not None:
            raise ModelError("an adapted pytorch-fm model has no bag fields (w must be None)")
        features = self.inner.embedding
        self.inner.embedding = _GivenEmbedding(emb)
        try:
            out = self.inner(x - self.offsets)
        finally:
            self.inner.embedding = features
        out = out.reshape(len(x))
        return torch.logit(out, eps=1e-7) if self.output == "probability" else out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: LongTensor (batch, fields) GLOBAL ids -> (batch, fields, d)."""
        return self.embedding(x)

    def coefficients(self, x: torch.Tensor, w: torch.Tensor | None = None) -> None:
        """No bags: every coefficient is 1 (None)."""
        return None

    def forward(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """x: LongTensor (batch, fields) GLOBAL ids -> logits (batch,)."""
        return calibrate(self, self.head(self.embed(x), x, w))

    def to_global(self, x_local: torch.Tensor) -> torch.Tensor:
        """pytorch-fm local ids (batch, fields) -> global ids (batch, fields)."""
        return x_local + self.offsets

    def config(self) -> dict[str, Any]:
        raise ModelError("an adapted pytorch-fm model has no registry config; save and "
                         "rebuild the wrapped model yourself")
