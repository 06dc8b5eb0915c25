"""Quantised dense heads: the storage rule, shared by the exporter and the numpy runtime.

Head precisions (``head_dtype``):

* ``fp32``: every head tensor as trained (artifact format version 1).
* ``fp16``: every floating head tensor stored as IEEE half.
* ``int8``: every floating head tensor with two or more dimensions (Linear weights, DCN
  cross matrices and gates, DCN-Mix expert matrices) stored as symmetric int8 with one fp32
  scale per OUTPUT channel: ``q = clip(round(w / s), -127, 127)``, ``s = max |w| / 127`` over
  the axis the layer reduces (the input axis; 1 for Linear weights, 2 for DCN-Mix ``u``),
  ``s = 1`` for an all-zero channel. The scales sit in section ``head_scale/<name>`` with the
  weight's shape and a 1 on the reduced axis, so they broadcast. Vectors (biases, batch-norm
  statistics) stay fp32: they are a few KiB and quantising them costs accuracy for nothing.

Batch norm is folded into the preceding Linear at load time (:mod:`shaver.runtime.heads`).
Folding multiplies each output channel by a constant, so per-output-channel quantisation of
the unfolded weight equals per-output-channel quantisation of the folded one.

First-order tables (DeepFM/FM per-id weights) take the more compact of the value dtype and
the head dtype (:func:`first_order_dtype`), so "int8 head" shrinks them too.

This module needs numpy only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from shaver.errors import ArtifactError

HEAD_DTYPES = ("fp32", "fp16", "int8")
#: Compactness order shared by value and head dtypes (first-order tables take the smaller).
_RANK = {"fp32": 0, "fp16": 1, "int8": 2}
_U_MATRIX = re.compile(r"^cross\.u\.\d+$")  # DCN-Mix up-projection: reduces its last axis
QMAX = 127


def check_head_dtype(head_dtype: str) -> str:
    if head_dtype not in HEAD_DTYPES:
        raise ArtifactError(f"head dtype must be one of {', '.join(HEAD_DTYPES)}, "
                            f"got {head_dtype!r}")
    return head_dtype


def first_order_dtype(value_dtype: str, head_dtype: str) -> str:
    """The first-order tables' dtype: the more compact of ``value_dtype`` and ``head_dtype``."""
    if value_dtype not in _RANK:  # a value dtype this module does not rank keeps its own rule
        return value_dtype
    return max((value_dtype, head_dtype), key=_RANK.__getitem__)


def reduced_axis(name: str, ndim: int) -> int:
    """The input (reduced) axis of head matrix ``name``: its scales span the other axes."""
    if ndim == 3 and _U_MATRIX.match(name):
        return 2
    return 1


def quantized_in_int8(name: str, shape: tuple[int, ...]) -> bool:
    """Whether a floating head tensor of this shape is stored as int8 in an int8 head."""
    return len(shape) >= 2


def scale_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the fp32 scales of an int8 head matrix (1 on the reduced axis)."""
    axis = reduced_axis(name, len(shape))
    return tuple(1 if i == axis else int(s) for i, s in enumerate(shape))


def quantize_int8(name: str, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight float -> (q int8, scales float32 of :func:`scale_shape`)."""
    w = np.asarray(weight, dtype=np.float32)
    axis = reduced_axis(name, w.ndim)
    peak = np.abs(w).max(axis=axis, keepdims=True)
    scales = np.where(peak > 0, peak / QMAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scales), -QMAX, QMAX).astype(np.int8)
    return q, scales


def dequantize_head(stored: Mapping[str, np.ndarray], scales: Mapping[str, np.ndarray],
                    head_dtype: str, where: str) -> dict[str, np.ndarray]:
    """Head tensors as the model uses them: int8 ones times their scales, fp16 as fp32.

    ``stored``: name -> array of the ``head/`` sections; ``scales``: name -> array of the
    ``head_scale/`` sections; ``head_dtype``: the header's. Raises :class:`ArtifactError` on
    scales in a head that is not int8, without their int8 tensor or of the wrong shape.
    """
    if scales and head_dtype != "int8":
        raise ArtifactError(f"{where}: head scales in a {head_dtype} head")
    out: dict[str, np.ndarray] = {}
    for name, array in stored.items():
        scale = scales.get(name)
        if scale is not None:
            if array.dtype != np.int8 or tuple(scale.shape) != scale_shape(name, array.shape):
                raise ArtifactError(f"{where}: head tensor {name} and its scales "
                                    f"{tuple(scale.shape)} are inconsistent")
            out[name] = array.astype(np.float32) * scale
        elif array.dtype == np.float16:
            out[name] = array.astype(np.float32)
        else:
            out[name] = array
    orphans = sorted(set(scales) - set(stored))
    if orphans:
        raise ArtifactError(f"{where}: head scales without their tensor: {', '.join(orphans)}")
    return out
