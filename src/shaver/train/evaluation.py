"""Evaluation and prediction of a model on a prepared dataset or on an id array."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shaver.data.store import PreparedDataset
from shaver.errors import DataError, ModelError
from shaver.train.device import pick_device
from shaver.train.distributed import DistContext, shard_bounds
from shaver.train.metrics import auc_logloss
from shaver.train.source import SplitSource

EVAL_BATCH = 16384


def check_fits(model: nn.Module, dataset: PreparedDataset) -> None:
    """Raise :class:`ModelError` unless ``model`` was built for ``dataset``'s feature map."""
    dims = list(getattr(model, "field_dims", []))
    if dims != dataset.field_dims:
        raise ModelError(
            f"the model has field_dims {dims[:8]}{'...' if len(dims) > 8 else ''} "
            f"({len(dims)} fields, {sum(dims)} rows) but {dataset.path} has "
            f"{dataset.num_fields} fields and {dataset.num_features} rows")
    layout = getattr(model, "layout", None)
    if layout is not None and layout != dataset.layout:
        raise ModelError(
            f"the model's list fields ({layout.describe()}) are not {dataset.path}'s "
            f"({dataset.layout.describe(dataset.field_names)}): build the model for the "
            f"dataset, build_model(name, dataset)")


@torch.no_grad()
def source_logits(model: nn.Module, source: SplitSource, batch_size: int,
                  ctx: DistContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels (rows,) of a whole split; with several ranks each scores a shard."""
    ctx = ctx or DistContext(device=source.device)
    was_training = model.training
    model.eval()
    lo, hi = shard_bounds(source.rows, ctx.rank, ctx.world)
    logits, labels = [], []
    for x, y, w in source.range_batches(lo, hi, batch_size):
        logits.append(model(x, w).float())
        labels.append(y)
    model.train(was_training)
    local = torch.stack([torch.cat(logits), torch.cat(labels)], dim=1) if logits \
        else torch.zeros((0, 2), device=source.device)
    counts = [b - a for a, b in (shard_bounds(source.rows, r, ctx.world) for r in range(ctx.world))]
    both = ctx.gather_rows(local, counts).cpu()
    return both[:, 0], both[:, 1]


def source_metrics(model: nn.Module, source: SplitSource, batch_size: int,
                   ctx: DistContext | None = None) -> dict[str, float | int]:
    """``{"auc", "logloss", "rows"}`` of ``model`` on a split source."""
    logits, labels = source_logits(model, source, batch_size, ctx)
    auc, ll = auc_logloss(labels.numpy(), torch.sigmoid(logits.double()).numpy())
    return {"auc": auc, "logloss": ll, "rows": int(len(labels))}


def evaluate(
    model: nn.Module,
    dataset: PreparedDataset,
    split: str = "test",
    *,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device | None = None,
    in_memory: bool | None = None,
) -> dict[str, float | int]:
    """Test (or any split's) ``{"auc", "logloss", "rows"}`` of ``model`` in eval mode.

    The model is moved to ``device`` (auto: CUDA when present). AUC is NaN when the split
    holds a single class; :class:`DataError` when it is empty.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_fits(model, dataset)
    dev = pick_device(device)
    model.to(dev)
    source = SplitSource(dataset, split, dev, in_memory=in_memory)
    if source.rows == 0:
        raise DataError(f"{dataset.path}: split {split!r} has no rows to evaluate")
    return source_metrics(model, source, batch_size)


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    x: np.ndarray,
    w: np.ndarray | None = None,
    *,
    batch_size: int = EVAL_BATCH,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Click probabilities float32 (rows,) for global ids ``x`` int (rows, slots) (bags
    padded with -1; ``w`` float (rows, slots) the weighted bags' weights), eval mode."""
    ids = np.asarray(x)
    slots = getattr(model, "num_slots", None) or len(getattr(model, "field_dims", [])) or None
    if ids.ndim != 2 or (slots is not None and ids.shape[1] != slots):
        raise DataError(f"x has shape {ids.shape}, expected (rows, {slots}) global ids")
    if not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"x has dtype {ids.dtype}, expected integer global ids")
    if w is not None and np.shape(w) != ids.shape:
        raise DataError(f"w has shape {np.shape(w)}, expected {ids.shape} (one weight a slot)")
    dev = pick_device(device)
    model.to(dev)
    was_training = model.training
    model.eval()

    def part(a: np.ndarray | None, lo: int, dtype: torch.dtype) -> torch.Tensor | None:
        return None if a is None else torch.as_tensor(a[lo: lo + batch_size], dtype=dtype,
                                                      device=dev)

    out = [torch.sigmoid(model(part(ids, lo, torch.long), part(w, lo, torch.float32)).float())
           .cpu() for lo in range(0, len(ids), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)
