"""The head of a plan as the artifact stores it: fp32, fp16, or int8 with per-channel scales.

The storage rule (which tensors, which scales) is :mod:`shaver.runtime.headq`, shared with
the numpy runtime. :func:`fake_quantize_head` gives a copy of a model whose head and
first-order tensors hold exactly the values the artifact stores (int8 times scales, fp16
rounded): the torch reference the runtime must match, and what the chooser scores.
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


def head_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state outside the embedding (name -> tensor), in state-dict order."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("embedding.")}


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
