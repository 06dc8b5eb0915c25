"""Bag pooling in torch: the twin of :meth:`shaver.layout.FieldLayout.pool` and
:meth:`~shaver.layout.FieldLayout.coefficients` (same formulas; the numpy runtime and the
ONNX graph compute the same numbers).

A model with bags looks up every slot (pads read row 0 and get coefficient 0) and pools each
bag's slots into one vector per field: ``sum_s coef[s] * e[s]``, so the head sees
(batch, fields, d) as for single-valued fields.
"""

from __future__ import annotations

import torch
from torch import nn

from shaver.layout import FieldLayout


class Pooling(nn.Module):
    """Pool (batch, slots, k) into (batch, fields, k) for ``layout`` (which has bags)."""

    def __init__(self, layout: FieldLayout):
        super().__init__()
        self.layout = layout
        self.pieces = layout.runs()
        self.bags = [(int(layout.starts[b.field]), int(layout.starts[b.field + 1]),
                      b.pooling == "mean", b.weighted) for b in layout.bags]
        self.register_buffer("slot_field", torch.from_numpy(layout.slot_field), persistent=False)

    def coefficients(self, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """x (batch, slots) ids (-1: pad), w (batch, slots) weights or None -> float32
        (batch, slots): 1 for single-valued slots; a bag value's weight (1 in a bag that is not
        weighted) for sum pooling, or its share of the bag's total weight for mean pooling;
        0 for pads and empty bags."""
        coef = torch.ones(x.shape, dtype=torch.float32, device=x.device)
        for lo, hi, mean, weighted in self.bags:
            v = (x[:, lo:hi] >= 0).to(torch.float32)
            if w is not None and weighted:
                v = v * w[:, lo:hi].to(torch.float32)
            if mean:
                total = v.sum(dim=1, keepdim=True)
                v = v / torch.where(total == 0, torch.ones_like(total), total)
            coef[:, lo:hi] = v
        return coef

    def forward(self, values: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """values (batch, slots, k), coef (batch, slots) -> (batch, fields, k)."""
        parts = []
        for kind, lo, hi in self.pieces:
            if kind == "single":
                parts.append(values[:, lo:hi])
            else:
                parts.append((values[:, lo:hi] * coef[:, lo:hi].unsqueeze(2).to(values.dtype))
                             .sum(dim=1, keepdim=True))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def pool_scalars(self, values: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """values (batch, slots) -> (batch,): the sum over fields of the pooled scalars
        (first-order terms: sum over slots of coef * value)."""
        return (values * coef.to(values.dtype)).sum(dim=1)
