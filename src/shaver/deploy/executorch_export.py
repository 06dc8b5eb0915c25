"""ExecuTorch export (optional): the artifact's whole model as a ``.pte`` program.

The compressed embedding goes through ``torch.export`` unchanged (its buffers become
constants of the program) and the head is delegated to XNNPACK where it can be. Needs the
``executorch`` package (checked: executorch 1.5.1 installs beside torch 2.13 without
replacing it; it is not a dependency of shaver).
Input: ids int64 (batch, fields); outputs: logit and probability (batch,). A model with
bags (multi-valued fields) is refused: its lookups of the valid ids only have data-dependent
shapes, which ``torch.export`` does not take as they are (export it to ONNX instead).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from shaver.deploy.embedding import compressed_model
from shaver.deploy.onnx_export import _random_ids, _WithProbability
from shaver.errors import ArtifactError
from shaver.fileio import atomic_path, check_output_file
from shaver.runtime.model import Artifact, load_artifact

log = logging.getLogger(__name__)


def export_executorch(artifact: Artifact | str | os.PathLike[str],
                      out_path: str | os.PathLike[str], *, check: bool = True,
                      seed: int = 0) -> Path:
    """Write ``artifact`` as an ExecuTorch program (XNNPACK-delegated where possible).

    With ``check``, runs the program with the ExecuTorch runtime on 8 random rows and raises
    :class:`ArtifactError` if its logits differ from torch's by more than 1e-4. A model
    with bags is refused (:class:`ArtifactError`; ONNX export supports it).
    """
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    if art.layout.has_bags:
        raise ArtifactError(f"{art.path}: ExecuTorch export does not support models with "
                            f"multi-valued fields ({art.layout.describe(art.field_names)}); "
                            "export it to ONNX (--format onnx) or use the numpy runtime")
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError as exc:
        raise ArtifactError("ExecuTorch export needs the executorch package "
                            "(pip install executorch; it must match your torch)") from exc
    model = _WithProbability(compressed_model(art)).eval()
    out_path = check_output_file(out_path, ArtifactError)
    example = torch.as_tensor(_random_ids(art, 8, seed))
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    buffer = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]) \
        .to_executorch().buffer
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(buffer)
        if check:
            _check(tmp, model, example)
    log.debug("wrote %s (%d bytes)", out_path, len(buffer))
    return out_path


def _check(path: Path, model: torch.nn.Module, x: torch.Tensor) -> None:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    got = method.execute([x])[0].numpy()
    with torch.no_grad():
        ref = model(x)[0].numpy()
    diff = float(np.abs(got - ref).max())
    if not diff <= 1e-4:
        raise ArtifactError(f"ExecuTorch check failed: logits differ from torch by {diff}")
