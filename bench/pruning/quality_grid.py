"""Quality grid: method x sparsity -> test AUC / LogLoss on MovieLens-100k or synthetic Criteo.

Commands (the tables in bench/pruning/README.md give the exact command behind each)::

    .venv/bin/python bench/pruning/quality_grid.py --work runs/quality-grid
    .venv/bin/python bench/pruning/quality_grid.py --dataset synthetic-criteo --rows 200000 \
        --work runs/quality-grid-criteo --threads 1 --attr-seconds 600 --finetune 3
    .venv/bin/python bench/pruning/quality_grid.py --quick --work /tmp/qg   # smoke test

``--dataset synthetic-criteo --rows N`` builds the data exactly as ``shaver bench --dataset
synthetic-criteo --rows N`` does (generator seed 0, ``criteo`` preset) and reports the hidden
model's AUC beside the base models' AUC. Synthetic data serves scale, never a quality claim.

For each model (DeepFM, DCN-Mix; paper sizes: d = 16, MLP 400-400-400): train once (seeded,
early stopping on val AUC), attribute once per placeholder (codebook, zero; train+val,
tolerance 0.01 or --attr-seconds), then prune with every method at every sparsity:

* auto (the default of ``shaver prune``): per sparsity, the cut the chooser
  (shaver.pruning.chooser) picks on the validation split, recalibrated, test metrics and the
  winning candidate; it uses the codebook attribution only, so its attribution compute
  equals the paper's Shaver's;
* shaver-cb/abs/fixed = the paper's Shaver; shaver-cb (codebook placeholder) and shaver-zero,
  orders abs / signed, codebook fixed / refit (refit only for the codebook placeholder);
  shaver-cb/abs/zero-ph: the paper's ranking with 0 as placeholder;
* budget-aware/abs: the semivalue of the codebook attribution's bins centred on each cut's
  active kept fraction (shaver.pruning.budget_aware.budget_aware_rankings at the paper's
  kept count), codebook placeholder, cut as one fixed candidate;
* magnitude |w| and random (seeded) and taylor |w dL/dw| (zero placeholder), abs order;
* ptq int8 / int4 / int2 with per-field and per-row scales: every entry kept in one tier
  (no sparsity; placed by bytes), the artifact's own quantisation;
* with --finetune N: the FINETUNED methods again, each pruned model fine-tuned (mask fixed).

Trained runs and attributions are cached in --work. Writes grid.csv / grid.json there and
prints a table (bytes = exact deployable-artifact size, feature map not included).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from grid_data import DATASETS, open_grid_dataset
from grid_tables import target_lines

from shaver.attribution.api import attribute
from shaver.attribution.result import Attribution
from shaver.models.registry import build_model
from shaver.pruning.api import prune
from shaver.pruning.finetune import FinetuneConfig
from shaver.pruning.scorers import compute_scores, data_frequencies
from shaver.runtime.tiered import TierSpec
from shaver.table.families import Shape
from shaver.train.checkpoint import load_run
from shaver.train.loop import evaluate, fit

DEVICE: str | None = None  # set from --device (None: cuda when available)
ATTR_DTYPE = "fp32"  # set from --attr-dtype (the tables below were measured in fp32)
ATTR_CV = "off"  # set from --attr-control-variate (the tables below: plain walks)
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)
MODELS = ("deepfm", "dcn-mix")


def trained(name: str, dataset, work: Path, epochs: int, seed: int):
    run_dir = work / f"run-{name}"
    if (run_dir / "config.json").exists():
        return load_run(run_dir, device=DEVICE).model
    torch.manual_seed(seed)
    model = build_model(name, dataset, embed_dim=16)
    fit(model, dataset, epochs=epochs, lr=1e-3, weight_decay=1e-5, batch_size=2048,
        patience=2, seed=seed, device=DEVICE, out_dir=run_dir, quiet=True)
    return load_run(run_dir, device=DEVICE).model


def attribution(model, dataset, work: Path, name: str, placeholder: str, seconds: float,
                seed: int, samples: int | None = None, data: str = "train+val") -> Attribution:
    path = work / f"run-{name}" / f"attribution-{placeholder}.safetensors"
    if path.exists():
        return Attribution.load(path)
    started = time.perf_counter()
    result = attribute(model, dataset, placeholder=placeholder, data=data, stop="sage",
                       tolerance=0.01, max_seconds=seconds, max_samples=samples, seed=seed,
                       device=DEVICE, quiet=True, dtype=ATTR_DTYPE, control_variate=ATTR_CV)
    result.settings["wall_seconds"] = time.perf_counter() - started
    result.save(path)
    return result


FINETUNED = ("shaver-cb/abs/fixed", "shaver-zero/abs/fixed", "magnitude/abs/fixed")


def method_rows(model, dataset, attrs, sparsities, seed: int, freq,
                finetune: FinetuneConfig | None = None,
                save: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Every method at every sparsity; ``save(rows so far)`` after each method."""
    rows = auto_rows(model, dataset, attrs["codebook"], sparsities, freq)
    if save is not None:
        save(rows)
    runs = [(label, scores, order, cb, None)
            for label, scores, order, cb in variants(model, dataset, attrs, seed)]
    if finetune is not None:
        runs += [(label + "+ft", scores, order, cb, finetune)
                 for label, scores, order, cb, _ in runs if label in FINETUNED]
    for label, scores, order, cb, ft in runs:
        started = time.perf_counter()
        for r in prune(model, scores, list(sparsities), order=order, codebook=cb,
                       dataset=dataset, frequencies=freq, include_feature_map=False,
                       finetune_config=ft, device=DEVICE, method="scores"):
            rows.append({"method": label, "sparsity": r.budget.value, "kept": r.kept,
                         "bytes": r.artifact_bytes, "auc": r.metrics["auc"],
                         "logloss": r.metrics["logloss"], "seconds": round(r.seconds, 4)})
        print(f"  {label}: {time.perf_counter() - started:.1f} s", flush=True)
        if save is not None:
            save(rows)
    return rows


def variants(model, dataset, attrs, seed: int) -> list[tuple]:
    """(label, scores, order, codebook) of every method with one ranking for all budgets."""
    from shaver.pruning.rankings import zero_placeholder
    from shaver.pruning.scorers import shapley_scores

    out = []
    for order in ("abs", "signed"):
        for cb in ("fixed", "refit"):
            out.append((f"shaver-cb/{order}/{cb}", attrs["codebook"], order, cb))
        if "zero" in attrs:
            out.append((f"shaver-zero/{order}/fixed", attrs["zero"], order, "fixed"))
    out.append(("shaver-cb/abs/zero-ph", zero_placeholder(shapley_scores(attrs["codebook"])),
                "abs", "fixed"))
    for scorer in ("magnitude", "random", "taylor"):
        scores = compute_scores(scorer, model, dataset=dataset, placeholder="zero", seed=seed,
                                device=DEVICE)
        out.append((f"{scorer}/abs/fixed", scores, "abs", "fixed"))
    return out


def auto_rows(model, dataset, attr, sparsities, freq) -> list[dict]:
    """auto (and its budget-aware candidate, shown alone) at every sparsity: test metrics,
    the winner, and every candidate's validation AUC / LogLoss."""
    started = time.perf_counter()
    rows = []
    for r in prune(model, attr, list(sparsities), method="auto", dataset=dataset,
                   frequencies=freq, include_feature_map=False, device=DEVICE):
        rows.append({"method": "auto", "sparsity": r.budget.value, "kept": r.kept,
                     "bytes": r.artifact_bytes, "auc": r.metrics["auc"],
                     "logloss": r.metrics["logloss"], "seconds": round(r.seconds, 4),
                     "winner": r.info["winner"],
                     "candidates": r.info.get("selection", {}).get("candidates")})
    print(f"  auto: {time.perf_counter() - started:.1f} s", flush=True)
    if attr.bins is not None:
        from shaver.pruning.budget_aware import budget_aware_rankings
        from shaver.table.budget import Budget

        total = model.embedding.weight.numel()
        for sparsity in sparsities:
            # the budget-aware ranking at the paper's kept count (as the chooser builds it),
            # cut as one fixed candidate: its codebook placeholder, |score| order, fp32
            began = time.perf_counter()  # scores + cut, as auto's seconds (no test pass)
            kept = Budget.sparsity(sparsity).kept_entries(total)
            ranks, record = budget_aware_rankings(attr, kept, freq)
            ranked = time.perf_counter() - began
            r = prune(model, ranks[0].scores, [sparsity], method="scores", dataset=dataset,
                      frequencies=freq, include_feature_map=False, device=DEVICE)[0]
            rows.append({"method": "budget-aware/abs/fixed", "sparsity": sparsity,
                         "kept": r.kept, "bytes": r.artifact_bytes, "auc": r.metrics["auc"],
                         "logloss": r.metrics["logloss"],
                         "seconds": round(ranked + r.seconds, 4),
                         "centre": record["semivalue_centre"],
                         "active_kept_fraction": record["active_kept_fraction"]})
    return rows


def ptq_rows(model, dataset) -> list[dict]:
    """Post-training quantisation: every entry kept in one int tier, as a fixed candidate."""
    scores = compute_scores("magnitude", model, placeholder="zero")
    rows = []
    for dtype in ("int8", "int4", "int2"):
        for scale in ("field", "row"):
            family = Shape((TierSpec(dtype, scale),), (1.0,))
            (r,) = prune(model, scores, [0.0], method="scores", dataset=dataset,
                         families=[family], device=DEVICE)
            rows.append({"method": f"ptq/{family.tiers[0].label}", "sparsity": None,
                         "kept": None, "bytes": r.artifact_bytes, "auc": r.metrics["auc"],
                         "logloss": r.metrics["logloss"], "seconds": None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/quality-grid"))
    ap.add_argument("--dataset", choices=DATASETS, default="movielens-100k")
    ap.add_argument("--rows", type=int, default=200_000,
                    help="rows of synthetic-criteo (default 200000; ignored for movielens-100k)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--attr-seconds", type=float, default=600.0,
                    help="cap on each attribution's wall time (it records the samples seen)")
    ap.add_argument("--attr-samples", type=int, default=None,
                    help="cap on each attribution's samples (reproducible, unlike seconds)")
    ap.add_argument("--attr-data", default="train+val",
                    help="attribution data (train+val as the paper; train keeps the validation "
                    "split, on which auto selects, out of the scores)")
    ap.add_argument("--placeholders", default="codebook,zero",
                    help="attributions to run (codebook is needed; zero adds shaver-zero rows)")
    ap.add_argument("--attr-dtype", default="fp32", choices=("fp32", "auto", "bf16", "int8"),
                    help="attribution precision (default fp32, as the recorded tables)")
    ap.add_argument("--attr-control-variate", default="off", choices=("off", "exact", "sampled"),
                    help="attribution control variate (default off: the paper's plain walks, "
                    "as the recorded tables; sampled is shaver attribute's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--device", default=None, help="auto (default), cpu, cuda")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="where the built-in dataset is cached (default ~/.cache/shaver)")
    ap.add_argument("--finetune", type=int, default=0, metavar="EPOCHS",
                    help="also fine-tune (mask fixed, Adam lr 1e-4, early stopping on val AUC) "
                    f"{', '.join(FINETUNED)} for up to EPOCHS epochs")
    ap.add_argument("--quick", action="store_true", help="1 epoch, 20 s attributions, 2 sparsities")
    args = ap.parse_args()
    global DEVICE, ATTR_DTYPE, ATTR_CV
    DEVICE, ATTR_DTYPE, ATTR_CV = args.device, args.attr_dtype, args.attr_control_variate
    if args.threads:
        torch.set_num_threads(args.threads)
    sparsities = (0.5, 0.95, 1.0) if args.quick else SPARSITIES
    if args.quick:
        args.epochs, args.attr_seconds = 1, 20.0
    args.work.mkdir(parents=True, exist_ok=True)
    dataset, info = open_grid_dataset(args.dataset, args.rows, args.work, seed=args.seed,
                                      cache_dir=args.cache_dir)
    print(f"{dataset}: {info}", flush=True)
    freq = data_frequencies(dataset, "train+val")
    rows = []
    for name in args.models.split(","):
        started = time.perf_counter()
        model = trained(name, dataset, args.work, args.epochs, args.seed)
        base = evaluate(model, dataset, "test", device=DEVICE)
        print(f"{name}: base AUC {base['auc']:.4f} ({time.perf_counter() - started:.0f} s)",
              flush=True)
        attrs = {p: attribution(model, dataset, args.work, name, p, args.attr_seconds, args.seed,
                                args.attr_samples, args.attr_data)
                 for p in args.placeholders.split(",")}
        meta = {p: attribution_summary(a) for p, a in attrs.items()}
        print(f"{name}: attribution {meta} ({time.perf_counter() - started:.0f} s)", flush=True)
        found = [{"method": "base", "sparsity": 0.0, "kept": None, "bytes": None,
                  "auc": base["auc"], "logloss": base["logloss"], "seconds": None,
                  "attribution": meta, "data": info}]
        ft = (FinetuneConfig(epochs=args.finetune, lr=1e-4, patience=1, seed=args.seed)
              if args.finetune else None)
        done = list(rows)

        def save(partial: list[dict], done=done, name=name, found=found) -> None:
            write_grid(args.work, done + [{"model": name, **r} for r in found + partial])

        found += method_rows(model, dataset, attrs, sparsities, args.seed, freq, ft, save)
        found += ptq_rows(model, dataset)
        rows += [{"model": name, **r} for r in found]
        print_table(name, found)
        print(f"{name}: done in {time.perf_counter() - started:.0f} s", flush=True)
        write_grid(args.work, rows)  # after each model: a cut-short run keeps what it measured


def attribution_summary(result: Attribution) -> dict:
    """Samples, seconds and why the attribution stopped (ratio = max stderr / phi range)."""
    s = result.settings
    return {"count": result.count, "seconds": s.get("wall_seconds"),
            "stop_reason": s.get("stop_reason"), "convergence_ratio": s.get("convergence_ratio"),
            "passes": s.get("passes")}


def write_grid(work: Path, rows: list[dict]) -> None:
    """grid.csv and grid.json in ``work``, each written to a temporary name then replaced."""
    tmp = work / ".grid.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "method", "sparsity", "kept", "bytes",
                                               "auc", "logloss", "seconds", "winner"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, work / "grid.csv")
    tmp = work / ".grid.json.tmp"
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    os.replace(tmp, work / "grid.json")


def print_table(name: str, rows: list[dict]) -> None:
    print(f"\n== {name} (test AUC / LogLoss) ==")
    base = rows[0]
    print(f"base: AUC {base['auc']:.4f}  LogLoss {base['logloss']:.4f}  attribution "
          f"{base['attribution']}")
    methods = [r["method"] for r in rows if r["sparsity"] not in (None, 0.0)]
    methods = list(dict.fromkeys(methods))
    sparsities = sorted({r["sparsity"] for r in rows if r["sparsity"] not in (None, 0.0)})
    print(f"{'method':<26}" + "".join(f"{s:>16}" for s in sparsities))
    for m in methods:
        cells = {r["sparsity"]: r for r in rows if r["method"] == m}
        print(f"{m:<26}" + "".join(f"{cells[s]['auc']:>8.4f}/{cells[s]['logloss']:.4f}"
                                    if s in cells else f"{'':>16}" for s in sparsities))
    winners = {r["sparsity"]: r["winner"] for r in rows if r["method"] == "auto"}
    print(f"{'auto winner':<26}" + "".join(f"{winners.get(s, ''):>16.16}" for s in sparsities))
    for line in target_lines(rows):
        print(line)
    for r in rows:
        if r["method"].startswith("ptq"):
            print(f"{r['method']:<26} bytes {r['bytes']:>9}  AUC {r['auc']:.4f}  "
                  f"LogLoss {r['logloss']:.4f}")


if __name__ == "__main__":
    main()
