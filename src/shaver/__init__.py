"""shaver: shrink CTR embedding tables to any memory budget with Shapley values.

The pipeline, one sub-package per stage::

    shaver.data         raw logs -> prepared, memory-mapped dataset
    shaver.models       DeepFM, DCN-Mix, ... behind one model interface
    shaver.train        fit / evaluate / checkpoints
    shaver.attribution  field-aware codebook + Shapley value of every embedding entry
    shaver.pruning      budgets, scorers, masked embedding, fine-tuning
    shaver.deploy       compact artifact, compressed embedding, ONNX export
    shaver.runtime      torch-free numpy runtime for artifacts
    shaver.report       benchmark harness, HTML report, demo

Importing ``shaver`` does not import torch; the public names below load their
module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # data
    "PreparedDataset": "shaver.data.store",
    "open_dataset": "shaver.data.store",
    "DatasetSpec": "shaver.data.spec",
    "prepare_dataset": "shaver.data.prepare",
    "load_builtin": "shaver.data.builtin",
    "synth_criteo": "shaver.data.synthetic",
    # models and training
    "build_model": "shaver.models.registry",
    "CTRModel": "shaver.models.base",
    "fit": "shaver.train.loop",
    "evaluate": "shaver.train.loop",
    "load_run": "shaver.train.checkpoint",
    # attribution
    "attribute": "shaver.attribution.api",
    "Attribution": "shaver.attribution.result",
    "field_codebook": "shaver.attribution.codebook",
    # pruning
    "prune": "shaver.pruning.api",
    "FinetuneConfig": "shaver.pruning.finetune",
    "Budget": "shaver.table.budget",
    "MaskedEmbedding": "shaver.table.mask",
    # deployment
    "export_artifact": "shaver.deploy.artifact",
    "CompressedEmbedding": "shaver.deploy.embedding",
    "load_artifact": "shaver.runtime",
    "fleet": "shaver.deploy.fleet",
    # benchmark, report, demo
    "BenchConfig": "shaver.report.harness",
    "run_bench": "shaver.report.harness",
    "write_report": "shaver.report.html",
    "run_demo": "shaver.report.demo",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shaver' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
