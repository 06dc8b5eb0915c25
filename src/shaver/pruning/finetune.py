"""Optional fine-tuning of a plan, quantisation-aware: tier map and mask fixed.

Any plan the chooser builds (fp32, fp16, int8/int4/int2 tiers, mixed; any head precision)
trains on its stored grid (:func:`shaver.table.qat.on_stored_grid`): the forward pass
computes with exactly the values the artifact stores, the straight-through estimator gives
their gradients to latent fp32 values, the scales are refitted at every step by the
artifact's own rule (not learned: see :mod:`shaver.table.qat` for why). Pruned entries get
no gradient and keep their placeholder; the head and the first-order weights train through
their own stored grid (fp16 / int8 heads) or as they are (fp32).

The training itself is :func:`shaver.train.loop.fit` (Adam, shuffled batches, early stopping
on validation AUC, the best epoch's weights restored). The result is re-quantised by
:func:`shaver.table.tiers.plan_copy`, the function that built the plan, so it is what the
artifact stores and computes. Whether it replaces the plan as chosen is decided by the
caller on the chooser's validation measure (:func:`shaver.pruning.api.cut`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from shaver.data.store import PreparedDataset
from shaver.errors import TrainingError
from shaver.models.base import clear_calibration
from shaver.table.qat import on_stored_grid
from shaver.table.tiers import TieredEmbedding, plan_copy
from shaver.train.loop import fit
from shaver.train.options import check_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of the fine-tuning run (passed to ``shaver.train.loop.fit``). ``lr`` 1e-3 (the
    training's): on MovieLens-100k DeepFM it recovers more than 1e-4 in two epochs at every
    table budget 1/16 .. 1/128 (bench/pruning/README.md, finetune_frontier.py)."""

    epochs: int = 3
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 2048
    patience: int | None = 1
    seed: int = 0

    def __post_init__(self) -> None:  # refused when given, before any pruning work
        check_options(asdict(self), lambda key: f"fine-tuning {key}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def finetune(model: nn.Module, dataset: PreparedDataset,
             config: FinetuneConfig | None = None, *, head_dtype: str = "fp32",
             device: str | torch.device | None = None,
             quiet: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune a copy of the plan ``model`` (its embedding a TieredEmbedding, its head
    stored in ``head_dtype``) on ``dataset``; ``model`` itself is left as it is.

    Returns (the fine-tuned plan as the artifact computes it, in eval mode and without a
    calibration; ``{"best_epoch", "epochs_run", "seconds", "val", "history"}``: ``seconds``
    is the wall time of the epochs, each with its validation, as the training loop records
    them).
    """
    config = config or FinetuneConfig()
    emb = model.embedding
    if not isinstance(emb, TieredEmbedding):
        raise TrainingError("finetune expects a plan (embedding a TieredEmbedding), got "
                            f"{type(emb).__name__}")
    if dataset.num_rows("val") <= 0:
        raise TrainingError(f"{dataset.path}: fine-tuning stops early on the validation "
                            f"split, and there is none")
    latent = copy.deepcopy(model)
    clear_calibration(latent)  # trains the head's own logits; the caller refits it
    with on_stored_grid(latent, head_dtype):
        result = fit(latent, dataset, epochs=config.epochs, lr=config.lr,
                     weight_decay=config.weight_decay, batch_size=config.batch_size,
                     patience=config.patience, seed=config.seed, device=device, quiet=quiet)
    tuned = plan_copy(latent, emb.tier_map.cpu().numpy(), emb.tiers, emb.codebook, head_dtype)
    log.info("fine-tuned %d epochs, best %d (val AUC %s)", len(result.history),
             result.best_epoch, result.val and f"{result.val['auc']:.5f}")
    return tuned.eval(), {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
                          "seconds": sum(h["seconds"] for h in result.history),
                          "val": result.val, "history": result.history}
