"""Budget-aware codebook: refit each field's placeholder on the entries pruned at this budget.

The fixed codebook (METHOD.md section 4) is the frequency-weighted mean of ALL of a field's
rows. Once the mask is known, only the pruned entries read the placeholder, so the closed-form
minimiser of the expected squared distortion is the frequency-weighted mean over the pruned
entries only, per field f and column k::

    C'[f, k] = sum_{r in f, pruned(r, k)} freq[r] * E[r, k] / sum_{r in f, pruned(r, k)} freq[r]

Where the pruned entries of (f, k) were never seen, their plain mean is used; where nothing of
(f, k) is pruned, the fixed value stays (no entry reads it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from shaver.errors import ShaverError

CODEBOOK_MODES: tuple[str, ...] = ("fixed", "refit")


def check_codebook_mode(mode: str) -> str:
    if mode not in CODEBOOK_MODES:
        raise ShaverError(f"unknown codebook mode {mode!r}: expected 'fixed' or 'refit'")
    return mode


def refit_codebook(weight: torch.Tensor | np.ndarray, mask: np.ndarray,
                   field_dims: Sequence[int], frequencies: np.ndarray,
                   fixed: torch.Tensor | np.ndarray) -> torch.Tensor:
    """float32 (m, d) codebook refit on the pruned entries (``~mask``) of each field.

    weight: (n, d) original table; mask: bool (n, d), True = kept; frequencies: (n,) counts;
    fixed: (m, d) the codebook used where nothing is pruned.
    """
    w = np.asarray(torch.as_tensor(weight).detach().cpu(), dtype=np.float64)
    pruned = ~np.asarray(mask, dtype=bool)
    freq = np.asarray(frequencies, dtype=np.float64).reshape(-1, 1)
    if freq.shape[0] != w.shape[0] or pruned.shape != w.shape:
        raise ShaverError(f"refit_codebook: weight {w.shape}, mask {pruned.shape} and "
                          f"frequencies ({freq.shape[0]},) disagree")
    starts = np.concatenate([[0], np.cumsum(field_dims)[:-1]]).astype(np.int64)
    weight_sum = np.add.reduceat(pruned * freq * w, starts, axis=0)
    freq_sum = np.add.reduceat(pruned * freq, starts, axis=0)
    plain_sum = np.add.reduceat(pruned * w, starts, axis=0)
    count = np.add.reduceat(pruned.astype(np.int64), starts, axis=0)
    out = np.asarray(torch.as_tensor(fixed).detach().cpu(), dtype=np.float64).copy()
    seen = freq_sum > 0
    unseen = (count > 0) & ~seen
    out[seen] = weight_sum[seen] / freq_sum[seen]
    out[unseen] = plain_sum[unseen] / count[unseen]
    return torch.from_numpy(out.astype(np.float32))
