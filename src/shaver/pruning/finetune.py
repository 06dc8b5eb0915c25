"""Optional fine-tuning after pruning: the mask stays fixed, kept entries and head train.

Reuses :func:`shaver.train.loop.fit` (Adam, shuffled batches, early stopping on validation
AUC, best weights restored); the pruned model itself is a candidate too: if no fine-tuned
epoch beats its validation AUC, its weights are kept (``best_epoch`` 0). Pruned entries stay exactly at their placeholder: the gradient of
``embedding.weight`` is multiplied by the mask before the optimiser sees it (a tensor hook),
the weight there is 0 so Adam's L2 term adds nothing, and the codebook is a buffer.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from shaver.data.store import PreparedDataset
from shaver.errors import TrainingError
from shaver.table.mask import MaskedEmbedding
from shaver.train.loop import evaluate, fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of the fine-tuning run (passed to ``shaver.train.loop.fit``)."""

    epochs: int = 3
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 2048
    patience: int | None = 1
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def finetune(model: nn.Module, dataset: PreparedDataset,
             config: FinetuneConfig | None = None, *,
             device: str | torch.device | None = None, quiet: bool = True) -> dict[str, Any]:
    """Fine-tune a pruned ``model`` (embedding a MaskedEmbedding) in place.

    Returns ``{"val": ..., "test": ..., "best_epoch": int, "history": [...]}`` from the
    training loop. The model ends in eval mode with the best validation-AUC weights, the
    pruned model's own (epoch 0) included.
    """
    config = config or FinetuneConfig()
    emb = model.embedding
    if not isinstance(emb, MaskedEmbedding):
        raise TrainingError("finetune expects a pruned model (embedding a MaskedEmbedding), "
                            f"got {type(emb).__name__}")
    has_val = dataset.num_rows("val") > 0
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before = evaluate(model, dataset, "val", device=device) if has_val else None
    handle = emb.weight.register_hook(lambda grad: grad * emb.mask.to(grad.dtype))
    try:
        result = fit(model, dataset, epochs=config.epochs, lr=config.lr,
                     weight_decay=config.weight_decay, batch_size=config.batch_size,
                     patience=config.patience, seed=config.seed, device=device, quiet=quiet)
    finally:
        handle.remove()
    model.eval()
    if before is not None and result.val is not None and before["auc"] >= result.val["auc"]:
        log.info("fine-tuning did not beat the pruned model's validation AUC (%.4f >= %.4f): "
                 "kept the pruned weights", before["auc"], result.val["auc"])
        model.load_state_dict(start)
        test = evaluate(model, dataset, "test", device=device) if result.test else None
        return {"val": before, "test": test, "best_epoch": 0, "history": result.history}
    return {"val": result.val, "test": result.test, "best_epoch": result.best_epoch,
            "history": result.history}
