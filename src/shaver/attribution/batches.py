"""Rows of D as the attribution game sees them: tensors on the device, each bag's duplicate
ids merged (:meth:`shaver.attribution.imputer.PlaceholderImputer.prepare`), so that every
caller (the walks, the surrogate, refresh, refine) plays the same game on the same players.
"""

from __future__ import annotations

import torch

from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.sampling import SampleSource


def game_batch(source: SampleSource, imputer: PlaceholderImputer, lo: int, hi: int,
               device: torch.device | str
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Samples lo..hi-1 of ``source`` -> (x LongTensor (B, slots), y (B,), w (B, slots) or
    None), prepared for ``imputer``'s game."""
    x_np, y_np, w_np = source.batch(lo, hi)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    w = None if w_np is None else torch.from_numpy(w_np).to(device)
    x, w = imputer.prepare(x, w)
    return x, y, w
