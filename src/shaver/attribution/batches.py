"""Rows of D as tensors on the device: (x, y, w), the same for every caller (the walks,
the surrogate, refresh, refine)."""

from __future__ import annotations

import torch

from shaver.attribution.sampling import SampleSource


def game_batch(source: SampleSource, lo: int, hi: int, device: torch.device | str
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Samples lo..hi-1 of ``source`` -> (x LongTensor (B, slots) (bag pads -1), y (B,),
    w (B, slots) bag value weights or None), on ``device``."""
    x_np, y_np, w_np = source.batch(lo, hi)
    x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
    w = None if w_np is None else torch.from_numpy(w_np).to(device)
    return x, y, w
