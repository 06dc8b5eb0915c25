"""Quantised heads in the ONNX graph: the stored head tensors stay in their stored dtype.

The storage rule (which tensors, which scales) is :mod:`shaver.runtime.headq`, shared with
the numpy runtime. Here:

* :func:`shaver.table.head.fake_quantize_head` gives a copy of a model whose head and
  first-order tensors hold exactly the values the artifact stores (the torch reference the
  runtime must match; the chooser builds every candidate with it).
* :class:`StoredHeadModel` runs an artifact's model with its head tensors kept in their
  stored dtype (int8 + scales, fp16) as buffers, dequantised in the forward pass, so the ONNX
  graph carries int8 / fp16 initializers (Cast + Mul) instead of fp32 copies.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shaver.runtime.model import Artifact


class StoredHeadModel(nn.Module):
    """``model`` whose quantised head tensors come from buffers in their stored dtype.

    ``stored``: name -> (array as stored: int8 or fp16, scales float32 or None). The model's
    own parameters / buffers of those names are removed; each forward pass rebuilds them as
    ``stored.float() * scales`` (or ``stored.float()``) and sets them as plain attributes
    before running the model, so a traced export holds the int8 / fp16 initializers and a
    Cast (and Mul) per tensor.
    """

    def __init__(self, model: nn.Module, stored: dict[str, tuple[np.ndarray, np.ndarray | None]]):
        super().__init__()
        self.model = model
        self.targets = []
        for i, (name, (array, scales)) in enumerate(stored.items()):
            self.register_buffer(f"q{i}", torch.from_numpy(np.array(array)))
            self.register_buffer(f"s{i}", None if scales is None
                                 else torch.from_numpy(np.array(scales, dtype=np.float32)))
            owner_name, _, leaf = name.rpartition(".")
            owner = model.get_submodule(owner_name) if owner_name else model
            owner._parameters.pop(leaf, None)
            owner._buffers.pop(leaf, None)
            self.targets.append((owner, leaf))

    def forward(self, ids: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """The model's forward (ids (batch, slots), bag weights or None) -> logits."""
        for i, (owner, leaf) in enumerate(self.targets):
            value = getattr(self, f"q{i}").to(torch.float32)
            scales = getattr(self, f"s{i}")
            object.__setattr__(owner, leaf, value if scales is None else value * scales)
        return self.model(ids) if w is None else self.model(ids, w)


def stored_head_model(model: nn.Module, art: Artifact) -> nn.Module:
    """Wrap ``model`` (built from ``art``) so its quantised head stays quantised; an fp32
    head returns ``model`` itself."""
    if art.head_dtype == "fp32":
        return model
    arrays = art.container.arrays
    stored = {}
    for key, array in arrays.items():
        if key.startswith("head/") and array.dtype in (np.int8, np.float16):
            name = key.split("/", 1)[1]
            stored[name] = (array, arrays.get(f"head_scale/{name}"))
    return StoredHeadModel(model, stored).eval()
