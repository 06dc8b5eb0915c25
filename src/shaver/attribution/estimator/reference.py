"""The reference loop, as the authors run it: one head evaluation per permutation step.

For a batch, start from the full coalition, then remove one entry per step (for every sample
at once, each along its own permutation) and evaluate the imputer on the whole batch. Kept
for tests and as the in-run benchmark baseline; the fast engine must match it.
"""

from __future__ import annotations

import torch

from shaver.attribution.estimator.common import bce, precision
from shaver.attribution.imputer import PlaceholderImputer
from shaver.errors import AttributionError


class ReferenceEngine:
    """m*d + 1 imputer calls per batch. dtype: ``"fp32"`` or ``"bf16"`` (autocast head)."""

    name = "reference"

    def __init__(self, imputer: PlaceholderImputer, *, dtype: str = "fp32"):
        self.imputer = imputer
        self.dtype = dtype
        self.device = imputer.placeholder.device
        precision(dtype, self.device)  # validates dtype
        if dtype == "int8":
            raise AttributionError("the reference loop runs fp32 or bf16; int8 is an option of "
                                   "the fast engine")

    @torch.no_grad()
    def losses(self, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor,
               w: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, slots) global ids, y (B,), perm (B, K <= slots*d), w bag weights or None
        -> losses (B, K + 1) along the walk."""
        batch, walk = perm.shape
        keep = torch.ones(batch, self.imputer.num_players, dtype=torch.bool, device=x.device)
        rows = torch.arange(batch, device=x.device)
        out = torch.empty(batch, walk + 1, device=x.device)
        with precision(self.dtype, self.device):
            out[:, 0] = bce(self.imputer(x, keep, w), y)
            for t in range(walk):
                keep[rows, perm[:, t]] = False
                out[:, t + 1] = bce(self.imputer(x, keep, w), y)
        return out
