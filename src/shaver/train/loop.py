"""Training: Adam with weight decay, early stopping on validation AUC, resumable, seeded,
data-parallel under torchrun. ``evaluate`` and ``predict_proba`` live in
:mod:`shaver.train.evaluation` and are re-exported here."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from shaver.data.store import PreparedDataset
from shaver.errors import CheckpointError, DataError, ModelError, TrainingError
from shaver.models.base import CTRModel
from shaver.progress import progress_bar
from shaver.train.checkpoint import CONFIG_NAME, save_run
from shaver.train.distributed import DistContext, data_parallel, setup
from shaver.train.evaluation import EVAL_BATCH, check_fits, evaluate, predict_proba, source_metrics
from shaver.train.optim import make_optimizer, sparse_embeddings
from shaver.train.options import check_options
from shaver.train.source import SplitSource
from shaver.train.state import Progress, load_state, save_state

__all__ = ["TrainResult", "evaluate", "fit", "make_optimizer", "predict_proba"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`fit` produced: the model (best weights, eval mode) and the record."""

    model: CTRModel
    history: list[dict[str, Any]]
    best_epoch: int
    val: dict[str, Any] | None
    test: dict[str, Any] | None
    stopped_early: bool
    run_dir: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Settings:
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    patience: int | None
    lr_decay: float | None
    seed: int
    optimizer: str = "adam"


def _describe(model: nn.Module) -> dict[str, Any]:
    """The model's registry config, or (for a model brought by the user) its class and sizes."""
    try:
        return model.config()
    except (ModelError, AttributeError, NotImplementedError):
        return {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                "field_dims": list(getattr(model, "field_dims", []))}


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_epoch(model: nn.Module, step_model: nn.Module, opt: torch.optim.Optimizer,
                 source: SplitSource, s: _Settings, epoch: int, ctx: DistContext,
                 quiet: bool, row_params: list[nn.Parameter]) -> tuple[float, float]:
    """One epoch; returns (mean train loss over all ranks, samples per second).

    ``step_model``: ``model`` or its DDP wrapper; ``row_params``: the tables DDP leaves out,
    whose row-sparse gradients are averaged over ranks after each backward.
    """
    torch.manual_seed(_epoch_seed(s.seed, epoch, ctx.rank))  # dropout, inside fork_rng
    order = source.epoch_order(s.seed, epoch, ctx.rank, ctx.world)
    local_batch = max(2, s.batch_size // ctx.world)
    steps = math.ceil(len(order) / local_batch)
    sync_every = 1 if ctx.device.type == "cpu" else 25
    loss_sum = torch.zeros((), device=ctx.device)
    seen, start = 0, time.perf_counter()
    model.train()
    bar = progress_bar(total=steps, desc=f"epoch {epoch + 1}/{s.epochs}", unit="batch",
                       disable=quiet or not ctx.is_main, leave=False)
    for step, (x, y, w) in enumerate(source.train_batches(order, local_batch), start=1):
        loss = F.binary_cross_entropy_with_logits(step_model(x, w), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ctx.average_row_grads(row_params)
        opt.step()
        loss_sum += loss.detach() * len(y)
        seen += len(y)
        if step % sync_every == 0 or step == steps:
            total, rows = ctx.sum([float(loss_sum), float(seen)])
            if not math.isfinite(total):
                raise TrainingError(
                    f"the training loss became {total} at epoch {epoch + 1}, by batch {step} "
                    f"(lr {s.lr}); try a smaller learning rate. The last good checkpoint "
                    f"(epoch {epoch}) is kept.")
            bar.set_postfix(loss=f"{total / rows:.4f}",
                            rows_per_s=f"{seen * ctx.world / (time.perf_counter() - start):.0f}")
        bar.update()
    bar.close()
    ctx.sync_buffers(model)
    total, rows = ctx.sum([float(loss_sum), float(seen)])
    return total / max(rows, 1), rows / max(time.perf_counter() - start, 1e-9)


def _improved(progress: Progress, val: dict[str, Any] | None) -> bool:
    if val is None:
        return True
    auc = val["auc"]
    if progress.best_auc is None or (auc == auc and auc > progress.best_auc):
        return True
    return False


def fit(
    model: CTRModel,
    dataset: PreparedDataset,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    batch_size: int = 2048,
    patience: int | None = 2,
    lr_decay: float | None = None,
    seed: int = 0,
    optimizer: str = "adam",
    device: str | torch.device | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    quiet: bool = False,
    in_memory: bool | None = None,
    eval_batch_size: int = EVAL_BATCH,
) -> TrainResult:
    """Train ``model`` on ``dataset``'s train split, early-stopping on validation AUC.

    Adam (``lr``, L2 ``weight_decay``) on batches of ``batch_size`` (the global batch: with
    ``torchrun`` each of the W ranks takes ``batch_size // W`` rows of its shard). After each
    epoch the validation AUC decides: improved -> keep these weights (and, with ``out_dir``,
    write the run: config.json + model.safetensors); else count towards ``patience`` and
    multiply the learning rate by ``lr_decay`` if given. ``optimizer="lazy-adam"`` updates
    only the embedding rows a batch looks up (:mod:`shaver.train.optim`; faster on large
    tables, a different optimisation of rare rows); the default ``"adam"`` is dense Adam.
    With ``out_dir`` the full training state is saved after every epoch so ``resume=True``
    continues where it stopped. The returned model holds the best weights, in eval mode;
    test metrics are computed if the dataset has a test split. A NaN/inf loss raises
    :class:`TrainingError`, leaving the last good checkpoint untouched. Same seed and data
    -> same model.
    """
    check_options({"epochs": epochs, "lr": lr, "weight_decay": weight_decay,
                   "batch_size": batch_size, "patience": patience, "lr_decay": lr_decay,
                   "seed": seed, "optimizer": optimizer})
    s = _Settings(int(epochs), float(lr), float(weight_decay), int(batch_size),
                  None if patience is None else int(patience),
                  None if lr_decay is None else float(lr_decay), int(seed), optimizer)
    check_fits(model, dataset)
    if out_dir is not None:
        model.config()  # a run directory needs a registry config: fail before training
    ctx = setup(device)
    if s.optimizer == "lazy-adam" and ctx.enabled and dist.get_backend() != "gloo":
        raise TrainingError(
            f"optimizer 'lazy-adam' under torchrun needs the gloo backend (its row gradients "
            f"are averaged by all-gathers and all-reduces that have only been run on gloo, not "
            f"on {dist.get_backend()}); use optimizer 'adam', or initialise the process group "
            "with gloo")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: is a file; the output must be a run directory")
    if out is not None and not resume and (out / CONFIG_NAME).exists():
        raise CheckpointError(f"{out} already holds a run; pass resume=True (--resume) "
                              "or choose another output directory")
    if resume and out is None:
        raise CheckpointError("resume=True needs out_dir (the run directory to resume)")
    model.to(ctx.device)
    train = SplitSource(dataset, "train", ctx.device, in_memory)
    if train.rows < 2 * ctx.world:
        raise DataError(f"{dataset.path}: the train split has {train.rows} rows, too few to train")
    val = SplitSource(dataset, "val", ctx.device, in_memory)
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), \
            sparse_embeddings(model, s.optimizer == "lazy-adam") as switched:
        row_params = [m.weight for m in switched]
        with data_parallel(model, ctx, row_params) as step_model:
            return _fit(model, step_model, row_params, dataset, train, val, s, ctx, out,
                        resume, quiet, eval_batch_size)


def _fit(model: CTRModel, step_model: nn.Module, row_params: list[nn.Parameter],
         dataset: PreparedDataset, train: SplitSource, val: SplitSource, s: _Settings,
         ctx: DistContext, out: Path | None, resume: bool, quiet: bool,
         eval_batch: int) -> TrainResult:
    opt = make_optimizer(model, s.lr, s.weight_decay, ctx.device, s.optimizer)
    identity = {"model": _describe(model), "dataset": dataset.fingerprint, "seed": s.seed}
    if s.optimizer != "adam":  # (dense-Adam states of earlier versions lack the key)
        identity["optimizer"] = s.optimizer
    progress, best = Progress(), _copy_state(model)
    if resume and out is not None:
        progress, best = load_state(out, model, opt, identity)
        log.info("resuming %s after epoch %d", out, progress.epoch)
    train_config = {"epochs": s.epochs, "lr": s.lr, "weight_decay": s.weight_decay,
                    "batch_size": s.batch_size, "patience": s.patience,
                    "lr_decay": s.lr_decay, "optimizer": s.optimizer, "world_size": ctx.world,
                    "device": ctx.device.type}
    while progress.epoch < s.epochs and not progress.stopped_early:
        epoch = progress.epoch
        started = time.perf_counter()
        loss, speed = _train_epoch(model, step_model, opt, train, s, epoch, ctx, quiet,
                                   row_params)
        metrics = source_metrics(model, val, eval_batch, ctx) if val.rows else None
        record = {"epoch": epoch + 1, "train_loss": loss, "lr": opt.param_groups[0]["lr"],
                  "val_auc": metrics["auc"] if metrics else None,
                  "val_logloss": metrics["logloss"] if metrics else None,
                  "samples_per_s": speed, "seconds": time.perf_counter() - started}
        progress.history.append(record)
        progress.epoch = epoch + 1
        if _improved(progress, metrics):
            auc = metrics["auc"] if metrics else None
            progress.best_auc = auc if auc is not None and math.isfinite(auc) else None
            progress.best_epoch, progress.bad_epochs = epoch + 1, 0
            best = _copy_state(model)
            if out is not None and ctx.is_main:
                save_run(out, model, dataset=dataset, metrics={"val": metrics,
                         "best_epoch": epoch + 1}, seed=s.seed, train_config=train_config)
        else:
            progress.bad_epochs += 1
            progress.stopped_early = s.patience is not None and progress.bad_epochs >= s.patience
            if s.lr_decay:
                for group in opt.param_groups:
                    group["lr"] *= s.lr_decay
        if ctx.is_main:
            log.info("epoch %d: loss %.5f, val AUC %s, %.0f rows/s", epoch + 1, loss,
                     f"{metrics['auc']:.5f}" if metrics else "n/a", speed)
        if out is not None and ctx.is_main:
            save_state(out, model, best, opt, progress, identity)
        ctx.barrier()
    model.load_state_dict(best)
    model.eval()
    return _finish(model, dataset, val, s, ctx, out, progress, eval_batch, train_config)


def _finish(model: CTRModel, dataset: PreparedDataset, val: SplitSource, s: _Settings,
            ctx: DistContext, out: Path | None, progress: Progress, eval_batch: int,
            train_config: dict[str, Any]) -> TrainResult:
    val_metrics = source_metrics(model, val, eval_batch, ctx) if val.rows else None
    test_metrics = None
    if dataset.num_rows("test"):
        test = SplitSource(dataset, "test", ctx.device)
        test_metrics = source_metrics(model, test, eval_batch, ctx)
    if out is not None and ctx.is_main:
        save_run(out, model, dataset=dataset,
                 metrics={"val": val_metrics, "test": test_metrics,
                          "best_epoch": progress.best_epoch, "epochs_run": progress.epoch,
                          "stopped_early": progress.stopped_early, "history": progress.history},
                 seed=s.seed, train_config=train_config)
    ctx.barrier()
    return TrainResult(model=model, history=progress.history, best_epoch=progress.best_epoch,
                       val=val_metrics, test=test_metrics, stopped_early=progress.stopped_early,
                       run_dir=out, settings=train_config)
