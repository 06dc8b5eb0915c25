"""Per-sample random permutations of the active entries, as a function of (seed, sample index).

Sample i of the attribution stream (its global index, across passes and ranks) always gets the
same permutation, whatever the batch size, the resume point or the number of ranks: samples are
grouped in fixed blocks of :data:`BLOCK`; each block draws uniform noise from its own
``torch.Generator`` seeded by ``(seed, block)``; a permutation is the stable argsort of a row.
"""

from __future__ import annotations

import numpy as np
import torch

#: Samples per generator block (fixed: changing it changes every permutation).
BLOCK = 64


def _block_seed(seed: int, block: int) -> int:
    state = np.random.SeedSequence([int(seed), int(block)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_permutations(
    seed: int, start: int, count: int, size: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """LongTensor (count, size): row k is the permutation of sample ``start + k``.

    Position t of a row holds the entry removed at step t of that sample's walk.
    """
    if count <= 0:
        return torch.zeros(0, size, dtype=torch.long, device=device)
    first, last = start // BLOCK, (start + count - 1) // BLOCK
    noise = []
    for block in range(first, last + 1):
        gen = torch.Generator().manual_seed(_block_seed(seed, block))
        noise.append(torch.rand(BLOCK, size, generator=gen, dtype=torch.float64))
    rows = torch.cat(noise)[start - first * BLOCK : start - first * BLOCK + count]
    return torch.argsort(rows.to(device), dim=1, stable=True)


def real_first(perm: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    """perm (B, P) uniform permutations, real (B, P) bool per PLAYER (None: all real) ->
    (B, K): each row's real players first, in their order in ``perm`` (a stable reorder, so
    still a uniform order of the real players), truncated to K = the largest number of real
    players of a row. The rest of a shorter row are null players (pads, zero-coefficient bag
    slots, pruned entries), whose removal changes nothing: a walk's cost follows the real
    players, not the padded width."""
    if real is None:
        return perm
    null_first = (~real.gather(1, perm)).to(torch.int8)
    order = torch.argsort(null_first, dim=1, stable=True)
    walk = int(real.sum(1).max()) if real.numel() else 0
    return perm.gather(1, order)[:, :walk]
