"""Multi-round refinement against one attribution: cost and test AUC at high sparsity.

    nice -n 10 .venv/bin/python bench/pruning/refine_grid.py --work runs/qg12 --keep 0.1,0.02 \
        --samples 17920 --threads 1

Reuses quality_grid.py's work directory (trained run + codebook attribution = round 0).
Each refinement round re-attributes the survivors of the previous cut in the pruned model
(shaver.attribution.refine) with --samples samples. Prints, per round, the samples, head
states evaluated and seconds, against round 0 (the attribution's own samples x (m*d + 1)
states); then test AUC / LogLoss of the refined ranking and of the paper's ranking (codebook
placeholder, fixed) at each sparsity. Writes refine.json in the work directory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from shaver.attribution.refine import refine
from shaver.attribution.result import Attribution
from shaver.pruning.api import prune
from shaver.pruning.scorers import Scores, data_frequencies, shapley_scores
from shaver.train.checkpoint import load_run, open_run_dataset

SPARSITIES = (0.9, 0.95, 0.98, 0.99, 0.999)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/qg12"))
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--keep", default="0.1,0.02", help="kept fractions of the rounds")
    ap.add_argument("--samples", type=int, default=17920, help="samples per round")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.work / f"run-{args.model}", device="cpu")
    dataset = open_run_dataset(run)
    attr = Attribution.load(args.work / f"run-{args.model}" / "attribution-codebook.safetensors")
    players = len(run.model.field_dims) * attr.shape[1]
    keep = [float(v) for v in args.keep.split(",")]
    started = time.perf_counter()
    refined = refine(run.model, dataset, attr, keep, samples=args.samples,
                     data=str(attr.settings.get("data", "train+val")))
    print(f"refinement: {time.perf_counter() - started:.0f} s", flush=True)
    base_states = attr.count * (players + 1)
    rounds = [{"round": 0, "kept": attr.phi.numel(), "samples": attr.count,
               "head_states": base_states, "seconds": attr.settings.get("wall_seconds")}]
    for r, rec in enumerate(refined.rounds, 1):
        rounds.append({"round": r, "kept": rec.kept, "samples": rec.samples,
                       "head_states": rec.head_states, "seconds": rec.seconds,
                       "states_per_sample": rec.head_states / rec.samples})
    for rec in rounds:
        print(json.dumps(rec), flush=True)
    freq = data_frequencies(dataset, "train+val")
    scores = {"paper": shapley_scores(attr),
              "refined": Scores(refined.values, "refined", "codebook", attr.codebook,
                                attr.model_fingerprint, attr.dataset_fingerprint)}
    cells = []
    for name, sc in scores.items():
        for r in prune(run.model, sc, list(SPARSITIES), dataset=dataset, frequencies=freq,
                       include_feature_map=False, method="scores"):
            cells.append({"method": name, "sparsity": r.budget.value, "kept": r.kept,
                          "auc": r.metrics["auc"], "logloss": r.metrics["logloss"]})
            print(f"{name:<8} {r.budget.value:<6g} AUC {r.metrics['auc']:.4f} "
                  f"LogLoss {r.metrics['logloss']:.4f}", flush=True)
    (args.work / "refine.json").write_text(json.dumps(
        {"keep": keep, "samples": args.samples, "rounds": rounds, "cells": cells}, indent=1))


if __name__ == "__main__":
    main()
