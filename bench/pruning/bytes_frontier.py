"""The bytes frontier: at table-byte budgets 1/4 .. 1/128 of the fp32 table, the default
(``prune(method="auto")`` at budget ``1/N``: the chooser's rankings x sparsity x bits x
tiers, chosen on validation) against PTQ alone and pruning alone (the paper's Shaver, fp32
kept values), all on exact table bytes.

    nice -n 10 .venv/bin/python bench/pruning/bytes_frontier.py --work runs/bytes-frontier \
        --threads 1 --attr-seconds 240 [--models deepfm,dcn-mix] [--seeds 0,1,2]

Per (model, seed): train once (as quality_grid.py: d = 16, MLP 400-400-400, Adam 1e-3, weight
decay 1e-5, batch 2048, <= 10 epochs, early stopping on val AUC), attribute once (codebook
placeholder, train+val, tolerance 0.01 or --attr-seconds), then:

* PTQ alone: int8 / int4 / int2 with field or row scales, no pruning (one tier holding every
  entry; its table = values + scales, no index, no codebook); the reference at a budget is the
  largest PTQ table within it (the best of the two scale granularities at that size);
* pruning alone: Shaver's |phi| order, fp32 kept values, the largest cut whose table fits
  (``prune(method="shaver")`` at the same ``1/N`` budget: the paper's fixed candidate);
* default: the cut ``prune(method="auto")`` chooses on validation among every candidate
  (:func:`shaver.pruning.chooser.candidates_for`), recalibrated.

Table bytes = kept values + index + scales + codebook of the artifact, exact
(:func:`shaver.table.size.plan_bytes`, the chooser's size oracle). Writes
frontier.json in --work and prints one markdown table per (model, seed).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import quality_grid
import torch
from grid_data import open_grid_dataset
from quality_grid import attribution, attribution_summary, trained

from shaver.errors import BudgetError
from shaver.pruning.api import prune
from shaver.runtime.tiered import TierSpec
from shaver.table.budget import Budget
from shaver.table.size import plan_bytes
from shaver.table.tiers import tiered_copy
from shaver.train.evaluation import evaluate

FRACTIONS = (4, 8, 16, 32, 64, 128)
PTQ = [TierSpec(d, s) for d in ("int8", "int4", "int2") for s in ("field", "row")]


def ptq_rows(model, dataset) -> list[dict]:
    """Every entry kept, one tier of each PTQ dtype: exact table bytes, val and test AUC."""
    n, d = model.embedding.weight.shape
    tmap = np.ones((n, d), np.uint8)
    rows = []
    for spec in PTQ:
        model_q = tiered_copy(model, tmap, [spec], torch.zeros(len(model.field_dims), d))
        size = plan_bytes(model, tmap, [spec])[1]
        val = evaluate(model_q, dataset, "val", device=quality_grid.DEVICE)
        test = evaluate(model_q, dataset, "test", device=quality_grid.DEVICE)
        rows.append({"plan": f"ptq {spec.label}", "table_bytes": size,
                     "val_auc": float(val["auc"]), "auc": float(test["auc"]),
                     "logloss": float(test["logloss"])})
    return rows


def budget_row(model, attr, dataset, fraction: int, ptq: list[dict]) -> dict:
    fp32 = model.embedding.weight.numel() * 4
    budget = Budget.parse(f"1/{fraction}")
    limit = budget.byte_limit(fp32)
    chosen = prune(model, attr, budget, method="auto", dataset=dataset,
                   device=quality_grid.DEVICE)[0]
    record = chosen.info
    try:  # the paper's cut alone at the same table budget (its fixed candidate)
        prune_only = prune(model, attr, budget, method="shaver", dataset=dataset,
                           device=quality_grid.DEVICE)[0]
    except BudgetError:  # not even nothing kept fits in fp32
        prune_only = None
    fitting = [p for p in ptq if p["table_bytes"] <= limit]
    ptq_ref = None
    if fitting:
        size = max(p["table_bytes"] for p in fitting)
        ptq_ref = max((p for p in fitting if p["table_bytes"] == size), key=lambda p: p["auc"])
    return {"fraction": f"1/{fraction}", "limit": limit, "fp32_table": fp32,
            "default": {"plan": record["plan"], "winner": record["winner"],
                        "kept": chosen.kept, "table_bytes": chosen.table_bytes,
                        "artifact_bytes": chosen.artifact_bytes,
                        "val_auc": record["val_metrics"]["auc"], **chosen.metrics},
            "prune_only": None if prune_only is None else {
                "kept": prune_only.kept, "table_bytes": prune_only.table_bytes,
                "val_auc": float(evaluate(prune_only.model, dataset, "val",
                                          device=quality_grid.DEVICE)["auc"]),
                **prune_only.metrics},
            "ptq": ptq_ref, "candidates": record["selection"]["candidates"]}


def print_table(title: str, base: dict, rows: list[dict]) -> None:
    print(f"\n### {title} (base: test AUC {base['auc']:.4f}, fp32 table "
          f"{rows[0]['fp32_table']:,} bytes)\n")
    print("| budget | bytes | default (ranking, plan) | kept | table bytes | AUC | PTQ alone (largest within) "
          "| AUC | pruning alone (fp32) table bytes | AUC | default - best ref |")
    print("| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        dft, ptq, pr = r["default"], r["ptq"], r["prune_only"]
        refs = [x["auc"] for x in (ptq, pr) if x is not None]
        gap = dft["auc"] - max(refs) if refs else float("nan")
        ptq_cell = (f"{ptq['plan'][4:]} ({ptq['table_bytes']:,})", f"{ptq['auc']:.4f}") \
            if ptq else ("none fits", "n/a")
        pr_cell = (f"{pr['table_bytes']:,} (kept {pr['kept']:,})", f"{pr['auc']:.4f}") \
            if pr else ("-", "n/a")
        print(f"| {r['fraction']} | {r['limit']:,} | {dft.get('winner') or dft['plan']} | {dft['kept']:,} | "
              f"{dft['table_bytes']:,} | {dft['auc']:.4f} | {ptq_cell[0]} | {ptq_cell[1]} | "
              f"{pr_cell[0]} | {pr_cell[1]} | {gap:+.4f} |")


def print_summary(results: dict) -> None:
    """Every stored run's table, then the mean over seeds per (dataset, model) and budget."""
    groups: dict[str, list[dict]] = {}
    for key, run in results.items():
        print_table(key, run["base"], run["budgets"])
        groups.setdefault(key.rsplit("/", 1)[0], []).append(run)
    for group, runs in groups.items():
        print(f"\n### {group}: mean test AUC over {len(runs)} seed(s)\n")
        print("| budget | default | PTQ alone (largest within) | pruning alone | "
              "default - PTQ | default - pruning | LogLoss default | LogLoss pruning |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for i, row in enumerate(runs[0]["budgets"]):
            cells = [r["budgets"][i] for r in runs]
            dft = np.mean([c["default"]["auc"] for c in cells])
            ptq = [c["ptq"]["auc"] for c in cells if c["ptq"]]
            pr = [c["prune_only"]["auc"] for c in cells if c["prune_only"]]
            ptq_m = np.mean(ptq) if len(ptq) == len(cells) else float("nan")
            pr_m = np.mean(pr) if len(pr) == len(cells) else float("nan")
            ll_d = _mean([c["default"].get("logloss") for c in cells])
            ll_p = _mean([(c["prune_only"] or {}).get("logloss") for c in cells])
            print(f"| {row['fraction']} | {dft:.4f} | {_fmt(ptq_m)} | {_fmt(pr_m)} | "
                  f"{_fmt(dft - ptq_m, '+.4f')} | {_fmt(dft - pr_m, '+.4f')} | "
                  f"{_fmt(ll_d)} | {_fmt(ll_p)} |")


def _mean(values: list) -> float:
    """Mean over every seed, nan when a seed lacks the value."""
    return float(np.mean(values)) if values and None not in values else float("nan")


def _fmt(value: float, spec: str = ".4f") -> str:
    return "n/a" if np.isnan(value) else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic-criteo rows")
    parser.add_argument("--models", default="deepfm")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--fractions", default=",".join(map(str, FRACTIONS)))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--attr-seconds", type=float, default=240.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--summary", action="store_true",
                        help="print the tables of --work/frontier.json and stop")
    args = parser.parse_args()
    if args.summary:
        print_summary(json.loads((args.work / "frontier.json").read_text()))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    quality_grid.DEVICE = args.device
    args.work.mkdir(parents=True, exist_ok=True)
    dataset, info = open_grid_dataset(args.dataset, args.rows, args.work)
    out_path = args.work / "frontier.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for name in args.models.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{args.dataset}/{name}/seed{seed}"
            work = args.work / f"seed{seed}"
            work.mkdir(exist_ok=True)
            model = trained(name, dataset, work, args.epochs, seed)
            attr = attribution(model, dataset, work, name, "codebook", args.attr_seconds, seed)
            test = evaluate(model, dataset, "test", device=args.device)
            base = {"auc": float(test["auc"]), "logloss": float(test["logloss"])}
            ptq = ptq_rows(model, dataset)
            rows = [budget_row(model, attr, dataset, int(f), ptq)
                    for f in args.fractions.split(",")]
            results[key] = {"base": base, "ptq": ptq, "budgets": rows, "info": info,
                            "attribution": attribution_summary(attr)}
            out_path.write_text(json.dumps(results, indent=2) + "\n")
            print_table(key, base, rows)
            print("\nPTQ alone: " + "; ".join(f"{p['plan'][4:]} {p['table_bytes']:,} B "
                                               f"AUC {p['auc']:.4f}" for p in ptq))


if __name__ == "__main__":
    main()
