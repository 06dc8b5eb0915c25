"""Graph inputs of a model with bags (multi-valued fields): EmbeddingBag-style offsets.

A deployed graph should not make its caller pad lists, so a model with bags takes

* ``ids`` int64 (batch, single-valued fields): global ids of the single-valued fields, in
  field order (exactly today's input for a model without bags; absent when every field is
  a bag);
* per bag field, in field order: ``<name>_values`` int64 (N,) the global ids of every
  sample's list, concatenated; ``<name>_offsets`` int64 (batch,) where each sample's list
  starts in ``<name>_values`` (non-decreasing, in [0, N]; sample i's list ends where sample
  i+1's starts, the last at N); and for a weighted bag ``<name>_weights`` float32 (N,) the
  values' weights.

``<name>`` is the field's name in the artifact's feature map (``field<f>`` without one). An
empty list (two equal offsets) and N = 0 are fine: the bag's pooled vector is 0. The graph
pads each list into the bag's ``max_len`` slots itself (:class:`SlotsFromOffsets`) and runs
the model on slots (:mod:`shaver.layout`). Truncation: a list longer than ``max_len`` keeps
its FIRST ``max_len`` values, as :func:`shaver.layout.pad_bags` does; the encoder
(:class:`shaver.data.encode.RowEncoder`) has already truncated lists the way the bag's
``keep`` says, so feed the encoder's lists (for ``keep: last``, pass the last values):
:func:`slots_to_feeds` turns its slot batch into the graph's inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from shaver.layout import PAD, FieldLayout, pad_bags

#: The inputs of one bag: (values, offsets) or (values, offsets, weights).
BagArrays = tuple[np.ndarray, ...]


def input_names(layout: FieldLayout, names: Sequence[str]) -> list[str]:
    """The graph's input names, in order: ``ids`` (unless every field is a bag), then each
    bag's values, offsets (and weights when the bag is weighted)."""
    out = ["ids"] if len(layout.single_fields) else []
    for b in layout.bags:
        out += [f"{names[b.field]}_values", f"{names[b.field]}_offsets"]
        if b.weighted:
            out.append(f"{names[b.field]}_weights")
    return out


def dynamic_axes(layout: FieldLayout, names: Sequence[str]) -> dict[str, dict[int, str]]:
    """``torch.onnx.export`` dynamic axes: the batch, and each bag's total value count."""
    axes: dict[str, dict[int, str]] = {"ids": {0: "batch"}} if len(layout.single_fields) \
        else {}
    for b in layout.bags:
        name = names[b.field]
        axes[f"{name}_values"] = {0: f"{name}_count"}
        axes[f"{name}_offsets"] = {0: "batch"}
        if b.weighted:
            axes[f"{name}_weights"] = {0: f"{name}_count"}
    return axes


class SlotsFromOffsets(nn.Module):
    """(ids, *bag inputs) in the order of :func:`input_names` -> (x int64 (batch, slots)
    padded with -1, w float32 (batch, slots) or None when no bag is weighted), in ops ONNX
    exports as standard operators (Concat, Gather, Where, Less, ReduceSum)."""

    def __init__(self, layout: FieldLayout):
        super().__init__()
        self.layout = layout
        self.register_buffer("positions", torch.arange(max(b.max_len for b in layout.bags),
                                                       dtype=torch.int64), persistent=False)

    def forward(self, ids: torch.Tensor | None, *bags: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``ids`` is None when every field is a bag."""
        layout = self.layout
        xs: list[torch.Tensor] = []
        ws: list[torch.Tensor] = []
        column, k = 0, 0
        for kind, lo, hi in layout.runs():
            if kind == "single":
                assert ids is not None
                part = ids[:, column:column + hi - lo]
                column += hi - lo
                xs.append(part)
                ws.append(torch.ones(part.shape, dtype=torch.float32, device=part.device))
                continue
            bag = layout.bag_of[int(layout.slot_field[lo])]
            values, offsets = bags[k], bags[k + 1]
            weights = bags[k + 2] if bag.weighted else None
            k += 3 if bag.weighted else 2
            x, w = self._pad(values, offsets, weights, bag.max_len)
            xs.append(x)
            ws.append(w)
        x = torch.cat(xs, dim=1)
        return x, (torch.cat(ws, dim=1) if layout.weighted else None)

    def _pad(self, values: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None,
             max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One bag's (ids (batch, max_len), weights (batch, max_len)): the first ``max_len``
        values of each list, -1 (weight 0) after its end."""
        count = torch.ones_like(values).sum(dim=0, keepdim=True)  # N, also when N = 0
        ends = torch.cat([offsets[1:], count])
        j = self.positions[:max_len].unsqueeze(0)
        valid = j < (ends - offsets).unsqueeze(1)
        # one extra element (the pad) at index N keeps every gather in bounds, even for N = 0
        index = torch.where(valid, offsets.unsqueeze(1) + j, count.unsqueeze(1))
        padded = torch.cat([values, torch.full((1,), PAD, dtype=values.dtype,
                                               device=values.device)])
        x = padded[index]
        if weights is None:
            return x, valid.to(torch.float32)
        w = torch.cat([weights.to(torch.float32),
                       torch.zeros(1, dtype=torch.float32, device=weights.device)])
        return x, w[index]


class BagGraph(nn.Module):
    """``model`` (a shaver model on slots) behind :class:`SlotsFromOffsets`:
    forward(*inputs in :func:`input_names` order) -> (logit, probability) (batch,)."""

    def __init__(self, model: nn.Module, layout: FieldLayout):
        super().__init__()
        self.model = model
        self.slots = SlotsFromOffsets(layout)
        self.has_ids = bool(len(layout.single_fields))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, bags = (inputs[0], inputs[1:]) if self.has_ids else (None, inputs)
        x, w = self.slots(ids, *bags)
        logit = self.model(x, w)
        return logit, torch.sigmoid(logit)


def random_feeds(layout: FieldLayout, bounds: np.ndarray, names: Sequence[str], batch: int,
                 seed: int) -> dict[str, np.ndarray]:
    """Random graph inputs (name -> array) of ``batch`` samples: ids in their fields' ranges,
    lists of 0 to ``max_len + 1`` values (empty ones and too long ones included)."""
    rng = np.random.default_rng(seed)
    single = layout.single_fields
    ids = rng.integers(bounds[single], bounds[single + 1], size=(batch, len(single)))
    feeds = {"ids": ids.astype(np.int64)} if len(single) else {}
    for b in layout.bags:
        lengths = rng.integers(0, b.max_len + 2, size=batch)
        lengths[0] = 0  # an empty list in every batch
        values = rng.integers(bounds[b.field], bounds[b.field + 1], size=int(lengths.sum()))
        feeds[f"{names[b.field]}_values"] = values.astype(np.int64)
        feeds[f"{names[b.field]}_offsets"] = np.concatenate(
            [[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        if b.weighted:
            feeds[f"{names[b.field]}_weights"] = rng.uniform(
                0.2, 2.0, size=len(values)).astype(np.float32)
    return feeds


def feeds_to_slots(layout: FieldLayout, feeds: dict[str, np.ndarray], names: Sequence[str]
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """The slot batch (x (batch, slots), w or None) that graph inputs ``feeds`` stand for
    (:func:`shaver.layout.pad_bags`: the first ``max_len`` values of each list): what the
    numpy runtime and the torch model take."""
    first = layout.bags[0]
    batch = len(feeds["ids"]) if len(layout.single_fields) else \
        len(feeds[f"{names[first.field]}_offsets"])
    ids = np.asarray(feeds.get("ids", np.zeros((batch, 0))), dtype=np.int64)
    x = np.empty((batch, layout.num_slots), dtype=np.int64)
    w = np.ones((batch, layout.num_slots), dtype=np.float32) if layout.weighted else None
    x[:, layout.starts[layout.single_fields]] = ids
    for b in layout.bags:
        name = names[b.field]
        values = np.asarray(feeds[f"{name}_values"], dtype=np.int64)
        offsets = np.append(np.asarray(feeds[f"{name}_offsets"], dtype=np.int64), len(values))
        weights = feeds.get(f"{name}_weights") if b.weighted else None
        bx, bw = pad_bags(offsets, values, b.max_len, weights)
        lo, hi = int(layout.starts[b.field]), int(layout.starts[b.field + 1])
        x[:, lo:hi] = bx
        if w is not None and bw is not None:
            w[:, lo:hi] = bw
    return x, w


def slots_to_feeds(layout: FieldLayout, x: np.ndarray, w: np.ndarray | None,
                   names: Sequence[str]) -> dict[str, np.ndarray]:
    """The graph inputs (in :func:`input_names` order) of a slot batch ``x`` (batch, slots),
    ``w`` (weights or None: every value weighs 1), e.g. raw rows as
    :meth:`shaver.data.encode.RowEncoder.encode_slots` gives them: each bag's non-pad slots,
    in slot order, become its list. The inverse of :func:`feeds_to_slots` on such batches."""
    x = np.asarray(x, dtype=np.int64)
    layout.check_ids(x)
    feeds = {"ids": np.ascontiguousarray(x[:, layout.starts[layout.single_fields]])} \
        if len(layout.single_fields) else {}
    for b in layout.bags:
        name = names[b.field]
        lo, hi = int(layout.starts[b.field]), int(layout.starts[b.field + 1])
        part = x[:, lo:hi]
        real = part >= 0
        feeds[f"{name}_values"] = part[real]  # row-major: each row's values in slot order
        feeds[f"{name}_offsets"] = np.concatenate(
            [[0], np.cumsum(real.sum(1))[:-1]]).astype(np.int64)
        if b.weighted:
            weights = np.ones(part.shape, np.float32) if w is None else \
                np.asarray(w, dtype=np.float32)[:, lo:hi]
            feeds[f"{name}_weights"] = np.ascontiguousarray(weights[real])
    return feeds
