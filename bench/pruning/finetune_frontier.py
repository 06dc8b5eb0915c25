"""Fine-tuning the bottom of the bytes frontier: at table budgets 1/16 .. 1/128 of the fp32
table, test AUC of the default plan single-shot (``prune(method="auto")``) against the same
plan after at most --epochs epochs of quantisation-aware fine-tuning
(:func:`shaver.pruning.api.finetune_cut`: tier map and mask fixed, kept values and head
trained through their stored grid, early stopping on validation, the plan kept when no epoch
beats it), and against the dense model.

    nice -n 10 .venv/bin/python bench/pruning/finetune_frontier.py --work runs/ft-frontier \
        --threads 1 --attr-seconds 120 --models deepfm,dcn-mix --seeds 0 --epochs 2

Per (model, seed): trained and attributed as bytes_frontier.py does (quality_grid.py's
trainer: d = 16, MLP 400-400-400, Adam 1e-3, weight decay 1e-5, batch 2048, <= 10 epochs;
codebook attribution on train+val, --attr-seconds), cached in --work/seed<S>; one chooser
serves every budget. Fine-tuning: Adam --lr, batch 2048, patience 1, seed = the run's seed.
``ft_seconds`` is the wall time of ``finetune_cut`` (training epochs, their validation, the
re-quantisation, the recalibration and the test evaluation); ``--summary`` prints beside it
the median wall time of one epoch of the dense model's training (its run's history), the
unit the issue asks for. Writes finetune.json in --work and prints one markdown table per
run and the mean over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import quality_grid
import torch
from grid_data import open_grid_dataset
from quality_grid import attribution, trained

from shaver.pruning.api import cut, finetune_cut, open_chooser
from shaver.pruning.finetune import FinetuneConfig
from shaver.table.budget import Budget
from shaver.train.evaluation import evaluate

FRACTIONS = (16, 32, 64, 128)


def budget_row(chooser, names, fraction: int, config: FinetuneConfig) -> dict:
    single = cut(chooser, names, Budget.parse(f"1/{fraction}"), "auto")
    started = time.perf_counter()
    tuned = finetune_cut(chooser, single, config)
    seconds = time.perf_counter() - started
    val = tuned.info["finetune_val"]
    return {"fraction": f"1/{fraction}", "plan": single.info["winner"],
            "kept": single.kept, "table_bytes": single.table_bytes,
            "artifact_bytes": single.artifact_bytes, "single_auc": single.metrics["auc"],
            "single_logloss": single.metrics["logloss"], "ft_auc": tuned.metrics["auc"],
            "ft_logloss": tuned.metrics["logloss"], "val_before": val["before"]["auc"],
            "val_after": val["after"]["auc"], "epochs_run": tuned.info["finetune_epochs"],
            "best_epoch": tuned.info["finetune_best_epoch"], "ft_seconds": seconds}


def train_epoch_seconds(work: Path, key: str) -> float | None:
    """Median wall time of one epoch of the dense model's training (its run's history)."""
    _, name, seed = key.split("/")
    config = work / seed / f"run-{name}" / "config.json"
    if not config.is_file():
        return None
    history = json.loads(config.read_text()).get("metrics", {}).get("history") or []
    return float(np.median([h["seconds"] for h in history])) if history else None


def print_table(key: str, run: dict, epoch_seconds: float | None = None) -> None:
    epoch = "" if epoch_seconds is None else \
        f"; one dense training epoch {epoch_seconds:.1f} s (median)"
    print(f"\n### {key} (dense test AUC {run['dense']['auc']:.4f}{epoch})\n")
    print("| budget | plan (winner) | table bytes | single-shot AUC | fine-tuned AUC | gain "
          "| epochs run / kept | val AUC before -> after | ft seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in run["budgets"]:
        print(f"| {r['fraction']} | {r['plan']} | {r['table_bytes']:,} | {r['single_auc']:.4f} "
              f"| {r['ft_auc']:.4f} | {r['ft_auc'] - r['single_auc']:+.4f} | "
              f"{r['epochs_run']} / {r['best_epoch']} | {r['val_before']:.4f} -> "
              f"{r['val_after']:.4f} | {r['ft_seconds']:.1f} |")


def print_summary(results: dict, work: Path) -> None:
    groups: dict[str, list[dict]] = {}
    for key, run in results.items():
        print_table(key, run, train_epoch_seconds(work, key))
        groups.setdefault(key.rsplit("/", 1)[0], []).append(run)
    for group, runs in groups.items():
        dense = np.mean([r["dense"]["auc"] for r in runs])
        print(f"\n### {group}: mean test AUC over {len(runs)} seed(s) (dense {dense:.4f})\n")
        print("| budget | single-shot | fine-tuned | gain | dense - fine-tuned |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for i, row in enumerate(runs[0]["budgets"]):
            single = np.mean([r["budgets"][i]["single_auc"] for r in runs])
            tuned = np.mean([r["budgets"][i]["ft_auc"] for r in runs])
            print(f"| {row['fraction']} | {single:.4f} | {tuned:.4f} | {tuned - single:+.4f} "
                  f"| {dense - tuned:+.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic-criteo rows")
    parser.add_argument("--models", default="deepfm,dcn-mix")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)))
    parser.add_argument("--train-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (at most)")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate")
    parser.add_argument("--attr-seconds", type=float, default=240.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--summary", action="store_true",
                        help="print the tables of --work/finetune.json and stop")
    args = parser.parse_args()
    out_path = args.work / "finetune.json"
    if args.summary:
        print_summary(json.loads(out_path.read_text()), args.work)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    quality_grid.DEVICE = args.device
    args.work.mkdir(parents=True, exist_ok=True)
    dataset, info = open_grid_dataset(args.dataset, args.rows, args.work)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for name in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{args.dataset}/{name}/seed{seed}"
            work = args.work / f"seed{seed}"
            work.mkdir(exist_ok=True)
            model = trained(name, dataset, work, args.train_epochs, seed)
            attr = attribution(model, dataset, work, name, "codebook", args.attr_seconds, seed)
            test = evaluate(model, dataset, "test", device=args.device)
            chooser, names = open_chooser(model, attr, "auto", dataset=dataset,
                                          device=args.device)
            config = FinetuneConfig(epochs=args.epochs, lr=args.lr, seed=seed)
            rows = [budget_row(chooser, names, int(f), config)
                    for f in args.fractions.split(",")]
            results[key] = {"dense": {"auc": float(test["auc"]),
                                      "logloss": float(test["logloss"])},
                            "finetune": config.to_json(), "budgets": rows, "info": info}
            tmp = out_path.with_name(".finetune.json.tmp")
            tmp.write_text(json.dumps(results, indent=2) + "\n")
            os.replace(tmp, out_path)
            print_table(key, results[key], train_epoch_seconds(args.work, key))


if __name__ == "__main__":
    main()
