"""ONNX export of a whole artifact model, compressed embedding included, in standard ops.

The graph keeps the artifact's compact table as initializers (packed keep-masks uint8,
row pointers, kept values in their stored dtype, per-field scales, codebook) and decodes
rows with Gather (masks, row pointers), BitwiseAnd (bit unpacking), CumSum (rank of a kept
entry in its row), Gather (values) and Where (kept value vs the field's codebook); the head
follows as ordinary MatMul/Add/Relu... A quantised head (fp16 / int8 + per-channel
scales) keeps its stored initializers and is dequantised in the graph (Cast, Mul). Inputs: ``ids`` int64 (batch, fields) global ids;
a model with bags (multi-valued fields) takes ``ids`` of its single-valued fields and, per
bag, ``<name>_values`` / ``<name>_offsets`` (/ ``<name>_weights``) EmbeddingBag-style
(:mod:`shaver.deploy.onnx_bags`). Outputs: ``logit`` and ``probability`` float32 (batch,).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shaver.deploy import onnx_bags
from shaver.deploy.embedding import compressed_model
from shaver.deploy.head_quant import stored_head_model
from shaver.errors import ArtifactError
from shaver.fileio import atomic_path, check_output_file
from shaver.runtime.model import Artifact, load_artifact

log = logging.getLogger(__name__)
OPSET = 18


class _WithProbability(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit = self.model(ids)
        return logit, torch.sigmoid(logit)


def export_onnx(artifact: Artifact | str | os.PathLike[str], out_path: str | os.PathLike[str],
                *, opset: int = OPSET, check: bool = True, seed: int = 0) -> Path:
    """Write the ONNX graph of ``artifact`` to ``out_path`` (atomically).

    With ``check`` (and onnxruntime installed), runs onnxruntime on 64 random rows and
    raises :class:`ArtifactError` if its logits differ from the torch model's by > 1e-4.
    """
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    model = graph_model(art)
    example = tuple(torch.as_tensor(v) for v in random_feeds(art, 2, seed).values())
    axes = {"ids": {0: "batch"}} if not art.layout.has_bags else \
        onnx_bags.dynamic_axes(art.layout, art.field_names)
    out_path = check_output_file(out_path, ArtifactError)
    with atomic_path(out_path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(tmp), input_names=input_names(art),
                              output_names=["logit", "probability"], opset_version=opset,
                              dynamic_axes={**axes, "logit": {0: "batch"},
                                            "probability": {0: "batch"}}, dynamo=False,
                              # folding would turn a quantised head back into fp32 constants
                              do_constant_folding=art.head_dtype == "fp32")
        if check:
            check_onnx(tmp, model, art, seed)
    log.debug("wrote %s (%d bytes)", out_path, out_path.stat().st_size)
    return out_path


def graph_model(art: Artifact) -> nn.Module:
    """The torch module the graph is traced from: inputs as :func:`input_names` lists them,
    outputs (logit, probability)."""
    model = stored_head_model(compressed_model(art), art)
    if art.layout.has_bags:
        return onnx_bags.BagGraph(model, art.layout).eval()
    return _WithProbability(model).eval()


def input_names(art: Artifact) -> list[str]:
    """The graph's input names: ``["ids"]``, plus each bag's (:mod:`shaver.deploy.onnx_bags`)."""
    return onnx_bags.input_names(art.layout, art.field_names)


def random_feeds(art: Artifact, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random graph inputs of ``batch`` samples (name -> array, in input order)."""
    if not art.layout.has_bags:
        return {"ids": _random_ids(art, batch, seed)}
    return onnx_bags.random_feeds(art.layout, art.tables.bounds, art.field_names, batch, seed)


def _random_ids(art: Artifact, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = art.tables.bounds[:-1], art.tables.bounds[1:]
    return rng.integers(lo, hi, size=(batch, len(lo))).astype(np.int64)


def check_onnx(path: str | os.PathLike[str], model: nn.Module, art: Artifact, seed: int = 0,
               batch: int = 64, atol: float = 1e-4) -> float:
    """Max |logit difference| between onnxruntime and torch on random inputs (a model with
    bags: empty and too long lists included); raise if > atol."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is in the onnx extra
        log.warning("onnxruntime is not installed: the ONNX graph was not checked")
        return float("nan")
    feeds = random_feeds(art, batch, seed + 1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logit"], feeds)[0]
    with torch.no_grad():
        ref = model(*(torch.as_tensor(v) for v in feeds.values()))[0].numpy()
    diff = float(np.abs(got - ref).max())
    if not diff <= atol:
        raise ArtifactError(f"ONNX check failed: onnxruntime and torch logits differ by {diff}")
    return diff
