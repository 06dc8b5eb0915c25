"""``shaver train`` and ``shaver evaluate``: thin wrappers over :mod:`shaver.train`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from shaver.cli import add_run_dir

DEFAULTS = {"epochs": 10, "lr": 1e-3, "weight_decay": 1e-6, "batch_size": 2048, "patience": 2,
            "lr_decay": None, "seed": 0, "optimizer": "adam"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``shaver train`` and ``shaver evaluate`` to the ``shaver`` parser."""
    from shaver.models.registry import MODEL_NAMES

    t = sub.add_parser(
        "train", help="train a CTR model on a prepared dataset",
        description="Adam with weight decay, early stopping on validation AUC, resumable. "
        "Writes OUT/config.json + OUT/model.safetensors (the best epoch) and "
        "OUT/checkpoint/ (the state to --resume). Launch with torchrun for data-parallel "
        "training.")
    t.add_argument("--data", type=Path, required=True, help="prepared dataset directory")
    t.add_argument("--model", default=None,
                   help=f"model name: {', '.join(MODEL_NAMES)} (default deepfm, or --config's)")
    t.add_argument("--out", type=Path, required=True, help="run directory to write")
    t.add_argument("--config", type=Path, help="YAML with 'model:' options (name, embed_dim, "
                   "mlp_dims, ...) and optionally 'train:' options; flags override it")
    t.add_argument("--embed-dim", type=int, help="embedding dimension d (default 16; LR: 1)")
    t.add_argument("--epochs", type=int, help=f"maximum epochs (default {DEFAULTS['epochs']})")
    t.add_argument("--lr", type=float, help=f"Adam learning rate (default {DEFAULTS['lr']})")
    t.add_argument("--weight-decay", type=float,
                   help=f"L2 weight decay (default {DEFAULTS['weight_decay']})")
    t.add_argument("--batch-size", type=int,
                   help=f"global batch size (default {DEFAULTS['batch_size']})")
    t.add_argument("--patience", type=int, help="epochs without a better validation AUC "
                   f"before stopping; 0: never stop early (default {DEFAULTS['patience']})")
    t.add_argument("--lr-decay", type=float,
                   help="multiply the learning rate by this after an epoch without improvement")
    t.add_argument("--seed", type=int, help="seed of initialisation, order and dropout (default 0)")
    t.add_argument("--optimizer", choices=["adam", "lazy-adam"],
                   help="adam: dense Adam, as the paper trains (default); lazy-adam: only the "
                   "embedding rows a batch looks up are decayed and updated (faster on large "
                   "tables; a different optimisation of rare rows)")
    t.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    t.add_argument("--resume", action="store_true", help="continue OUT's interrupted training")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar nor epoch lines")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="test AUC and LogLoss of a trained run",
                       description="Evaluate a run directory on a split of its dataset "
                       "(checked by fingerprint).")
    add_run_dir(e)
    e.add_argument("--split", default="test", help="train, val, test, or a '+' combination")
    e.add_argument("--data", type=Path, help="dataset directory (default: the run's own)")
    e.add_argument("--batch-size", type=int, default=16384, help="evaluation batch size")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from shaver.data.store import open_dataset
    from shaver.models.registry import build_model
    from shaver.train.loop import fit
    from shaver.train.options import check_options, read_config

    model_opts, train_opts = read_config(args.config) if args.config else ({}, {})
    if args.model:
        model_opts["name"] = args.model
    model_opts.setdefault("name", "deepfm")
    if args.embed_dim is not None:
        model_opts["embed_dim"] = args.embed_dim
    settings = {**DEFAULTS, **train_opts}
    flags = [key for key in DEFAULTS if getattr(args, key) is not None]
    for key in flags:
        settings[key] = getattr(args, key)
    if settings["patience"] == 0:
        settings["patience"] = None
    check_options(settings, lambda key: "--" + key.replace("_", "-") if key in flags
                  else f"{args.config}: train.{key}")
    if args.quiet:
        logging.getLogger("shaver.train").setLevel(logging.WARNING)
    dataset = open_dataset(args.data)
    dataset.check_both_labels("val", "test")
    model_opts.pop("field_dims", None)
    model = build_model(model_opts, dataset, seed=settings["seed"])
    result = fit(model, dataset, out_dir=args.out, resume=args.resume, device=args.device,
                 quiet=args.quiet, **settings)
    if result.run_dir is None or not _is_main():
        return 0
    val = result.val or {}
    print(f"{model.name} on {dataset.path}: best epoch {result.best_epoch} of "
          f"{len(result.history)}{' (early stop)' if result.stopped_early else ''}; "
          f"val AUC {val.get('auc', float('nan')):.5f}")
    if result.test:
        print(f"test AUC {result.test['auc']:.5f}  LogLoss {result.test['logloss']:.5f}  "
              f"({result.test['rows']} rows)")
    print(f"run written to {result.run_dir}")
    return 0


def _is_main() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def _evaluate(args: argparse.Namespace) -> int:
    from shaver.train.checkpoint import load_run, open_run_dataset
    from shaver.train.evaluation import evaluate

    run = load_run(args.run, device=args.device)
    dataset = open_run_dataset(run, args.data)
    metrics = evaluate(run.model, dataset, args.split, batch_size=args.batch_size,
                       device=args.device)
    if args.json:
        print(json.dumps({"split": args.split, **metrics}))
    else:
        print(f"{run.config['model']['name']} {args.run} on {args.split}: AUC "
              f"{metrics['auc']:.5f}  LogLoss {metrics['logloss']:.5f}  ({metrics['rows']} rows)")
    return 0
