"""Quantised heads on the torch side: the fake-quantised model and the ONNX graph's head.

The storage rule (which tensors, which scales) is :mod:`shaver.runtime.headq`, shared with
the numpy runtime. Here:

* :func:`fake_quantize_head` gives a copy of a model whose head and first-order tensors hold
  exactly the values the artifact stores (int8 times scales, fp16 rounded): the torch
  reference the runtime must match, and what the head's AUC cost is measured on.
* :class:`StoredHeadModel` runs an artifact's model with its head tensors kept in their
  stored dtype (int8 + scales, fp16) as buffers, dequantised in the forward pass, so the ONNX
  graph carries int8 / fp16 initializers (Cast + Mul) instead of fp32 copies.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shaver.models.base import copy_without_embedding
from shaver.runtime.headq import (
    check_head_dtype,
    first_order_dtype,
    quantize_int8,
    quantized_in_int8,
)
from shaver.runtime.layout import dequantize_per_field, quantize_per_field
from shaver.runtime.model import Artifact
from shaver.table.size import head_tensors


def stored_head_values(name: str, tensor: torch.Tensor, head_dtype: str) -> np.ndarray:
    """The fp32 values a ``head_dtype`` artifact gives head tensor ``name`` after loading."""
    w = tensor.detach().float().cpu().numpy()
    if head_dtype == "int8" and quantized_in_int8(name, w.shape):
        q, scales = quantize_int8(name, w)
        return q.astype(np.float32) * scales
    if head_dtype == "fp16":
        return w.astype(np.float16).astype(np.float32)
    return w


def fake_quantize_head(model: nn.Module, head_dtype: str, value_dtype: str = "fp32") -> nn.Module:
    """A copy of ``model`` (eval mode) whose head and first-order tensors are replaced by the
    values an artifact with this ``head_dtype`` (and ``value_dtype``, which with the head
    dtype decides the first-order tables' dtype) stores. The embedding is left as it is."""
    check_head_dtype(head_dtype)
    emb = model.embedding
    clone = copy_without_embedding(model)
    n = int(emb.weight.shape[0])
    table_dtype = first_order_dtype(value_dtype, head_dtype)
    state = {}
    for name, tensor in head_tensors(clone).items():
        if not tensor.is_floating_point():
            continue
        if tensor.dim() == 2 and tensor.shape[0] == n and n > 1:
            table = tensor.detach().float().cpu().numpy()
            stored, scales = quantize_per_field(table, model.field_dims, table_dtype)
            values = dequantize_per_field(stored, scales, model.field_dims)
        else:
            values = stored_head_values(name, tensor, head_dtype)
        state[name] = torch.from_numpy(np.ascontiguousarray(values)).to(tensor.device,
                                                                      tensor.dtype)
    clone.load_state_dict(state, strict=False)
    return clone.eval()


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

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        for i, (owner, leaf) in enumerate(self.targets):
            value = getattr(self, f"q{i}").to(torch.float32)
            scales = getattr(self, f"s{i}")
            object.__setattr__(owner, leaf, value if scales is None else value * scales)
        return self.model(ids)


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
