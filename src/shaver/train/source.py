"""Batches for training and evaluation, fast on CPU.

Splits that fit in memory are loaded once into tensors (on the GPU when training there and
it fits), and batches are index gathers: no per-sample ``__getitem__``. Larger splits are
gathered batch by batch from the memory maps. Either way an epoch's order is the permutation
``np.random.default_rng([seed, epoch])`` (the same as ``PreparedDataset.batches``), and with
several processes each rank takes its strided shard of it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np
import torch

from shaver.data.store import PreparedDataset, resolve_splits

log = logging.getLogger(__name__)

#: One batch: x (batch, slots), y (batch,), w (batch, slots) or None.
Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
#: Fraction of RAM (or of free GPU memory) a split may take to be held in memory.
MEMORY_FRACTION = 0.25


def _ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def _home(nbytes: int, device: torch.device, in_memory: bool | None) -> torch.device | None:
    """Where to hold a split of ``nbytes``: ``device`` (GPU), ``cpu``, or None (memory map)."""
    if in_memory is False:
        return None
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes <= MEMORY_FRACTION * free:
            return device
    if in_memory or nbytes <= MEMORY_FRACTION * _ram_bytes():
        return torch.device("cpu")
    return None


class SplitSource:
    """One split (or ``+``-joined splits) of a prepared dataset, served as tensor batches.

    Batches are ``(x, y, w)``: ``x`` LongTensor (batch, slots) on ``device`` (bags padded
    with -1, :mod:`shaver.layout`); ``y`` float32 (batch,); ``w`` float32 (batch, slots) bag
    value weights, or None when no bag is weighted.
    """

    def __init__(self, dataset: PreparedDataset, split: str, device: torch.device,
                 in_memory: bool | None = None):
        self.dataset, self.split, self.device = dataset, split, device
        self.rows = dataset.num_rows(split)
        layout = dataset.layout
        width = layout.num_slots * (8 if layout.weighted else 4) + 4
        home = _home(self.rows * width, device, in_memory)
        self.x_all: torch.Tensor | None = None
        self.y_all: torch.Tensor | None = None
        self.w_all: torch.Tensor | None = None
        if home is not None:
            names = resolve_splits(split)  # int32 as stored: no int64 copy of the split
            if layout.has_bags:
                parts = [dataset.slots(s) for s in names]
                x = np.concatenate([p[0].astype(np.int32) for p in parts])
                if layout.weighted:
                    self.w_all = torch.from_numpy(np.concatenate([p[1] for p in parts])).to(home)
            else:
                x = np.concatenate([np.asarray(dataset.ids(s), dtype=np.int32) for s in names])
            y = np.concatenate([np.asarray(dataset.labels(s), dtype=np.float32) for s in names])
            self.x_all = torch.from_numpy(x).to(home)
            self.y_all = torch.from_numpy(y).to(home)
        log.debug("%s split %s: %d rows %s", dataset.path, split, self.rows,
                  "in memory" if home is not None else "memory-mapped")

    def _take_resident(self, index: torch.Tensor) -> Rows:
        """Rows ``index`` (a tensor on the split's own device) of the in-memory split."""
        assert self.x_all is not None and self.y_all is not None
        x, y = self.x_all[index], self.y_all[index]
        w = None if self.w_all is None else self.w_all[index].to(self.device, non_blocking=True)
        return (x.to(self.device, non_blocking=True).long(),
                y.to(self.device, non_blocking=True), w)

    def _take(self, idx: np.ndarray) -> Rows:
        if self.x_all is not None:
            return self._take_resident(torch.from_numpy(idx).to(self.x_all.device))
        x, y, w = self._gather_mapped(idx)
        return x.to(self.device).long(), y.to(self.device), \
            None if w is None else w.to(self.device)

    def _gather_mapped(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor,
                                                       torch.Tensor | None]:
        """Rows ``idx`` (ascending, over the joined splits) read from the memory maps."""
        xs, ys, ws, start = [], [], [], 0
        for name in resolve_splits(self.split):
            labels = self.dataset.labels(name)
            part = idx[(idx >= start) & (idx < start + len(labels))] - start
            start += len(labels)
            if len(part) == 0:
                continue
            if part[-1] - part[0] + 1 == len(part):  # contiguous: one slice of the map
                part = slice(int(part[0]), int(part[-1]) + 1)
            x, w = self.dataset.slots(name, part)
            xs.append(x)
            ws.append(w)
            ys.append(np.asarray(labels[part]))
        w = None if ws[0] is None else torch.from_numpy(np.concatenate(ws))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), w

    def epoch_order(self, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
        """This rank's rows of epoch ``epoch``: a strided shard of the seeded permutation.

        Every rank gets ``rows // world`` rows (a few rows are left out, differently each epoch)
        so all ranks run the same number of steps.
        """
        order = np.random.default_rng([seed, epoch]).permutation(self.rows)
        usable = self.rows - self.rows % world
        return order[:usable][rank::world]

    def train_batches(self, order: np.ndarray, batch_size: int) -> Iterator[Rows]:
        """Batches of ``order`` (rows sorted within a batch, for locality; a final batch of one
        row is dropped: batch norm needs two)."""
        resident = None
        if self.x_all is not None:  # the whole order goes over once: no per-batch sync
            resident = torch.from_numpy(order).to(self.x_all.device)
        for lo in range(0, len(order), batch_size):
            if min(len(order) - lo, batch_size) < 2 and lo > 0:
                break
            if resident is None:
                yield self._take(np.sort(order[lo: lo + batch_size]))
            else:
                yield self._take_resident(resident[lo: lo + batch_size].sort().values)

    def range_batches(self, lo: int, hi: int, batch_size: int) -> Iterator[Rows]:
        """Rows ``[lo, hi)`` in order, in batches."""
        for start in range(lo, hi, batch_size):
            yield self._take(np.arange(start, min(start + batch_size, hi)))
