"""One training epoch against the default attribution's rate, on synthetic Criteo of any size.

Prepares (or reuses, in --work) synthetic Criteo with --rows rows, times one training epoch
of a fresh DeepFM (39 fields, d 16, MLP 400x3; the settings of quality_vs_compute.py), then
runs the default attribution and the plain walks for --seconds each and prints, per option:
samples/s, the seconds one pass over the attribution data would take (the least the default
needs without a cap), that in training epochs, and the share of the rows one epoch's
compute walks (what ``--compute-epochs 1`` gets). Same machine, same run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/attribution/epoch_vs_default.py \\
        --rows 10000000 --work runs/criteo10m --threads 1 --seconds 240

``--uncapped E``: instead, run the default with no cap until its own rule stops it (a
safety cap of E epochs' seconds), and print its cost in training epochs of this run, its
passes, the precision it used and that precision's agreement with fp32 (the correlation of
credits on the first batch): the issue-23 target "stops by itself within 3 epochs".
``--device cuda`` runs training and attribution on a GPU (bench/attribution/gpu_check.sh).

    OMP_NUM_THREADS=1 .venv/bin/python bench/attribution/epoch_vs_default.py \\
        --rows 10000000 --work runs/criteo10m --threads 1 --uncapped 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pruning"))
from grid_data import open_grid_dataset  # noqa: E402

from shaver.attribution.api import attribute  # noqa: E402
from shaver.attribution.cost import attribution_cost, describe_cost  # noqa: E402
from shaver.attribution.estimator.hardware import cpu_summary  # noqa: E402
from shaver.models.registry import build_model  # noqa: E402
from shaver.train.loop import fit  # noqa: E402

OPTIONS = {"default": {}, "plain walks (dtype auto)": {"control_variate": False}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=240.0, help="attribution seconds per option")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="auto (default: CUDA when present), cpu, cuda")
    ap.add_argument("--uncapped", type=float, default=None, metavar="E",
                    help="run the default to its own stop (safety cap: E epochs' seconds)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    dataset, _ = open_grid_dataset("synthetic-criteo", args.rows, args.work, seed=args.seed)
    torch.manual_seed(args.seed)
    model = build_model("deepfm", dataset, embed_dim=16)
    began = time.perf_counter()
    fit(model, dataset, epochs=1, lr=1e-3, weight_decay=1e-5, batch_size=2048, patience=None,
        seed=args.seed, quiet=True, device=args.device)
    epoch = time.perf_counter() - began
    print(f"cpu: {cpu_summary()}, {torch.get_num_threads()} threads; synthetic Criteo "
          f"{args.rows} rows; one training epoch {epoch:.1f} s", flush=True)
    record = {"cpu": cpu_summary(), "threads": torch.get_num_threads(), "rows": args.rows,
              "device": str(next(model.parameters()).device), "epoch_seconds": epoch,
              "options": {}}
    if args.uncapped is not None:
        record["uncapped"] = uncapped(model, dataset, args, epoch)
        (args.work / "epoch_vs_default.json").write_text(json.dumps(record, indent=1) + "\n")
        return
    for label, kw in OPTIONS.items():
        res = attribute(model, dataset, max_seconds=args.seconds, seed=args.seed, quiet=True,
                        device=args.device, **kw)
        s = res.settings
        rate = res.count / s["seconds"]
        row = {"samples": res.count, "seconds": s["seconds"], "dtype_used": s["dtype_used"],
               "surrogate_rows_seen": s.get("surrogate_rows_seen"), "samples_per_s": rate,
               "data_rows": s["data_rows"], "one_pass_seconds": s["data_rows"] / rate,
               "one_pass_epochs": s["data_rows"] / rate / epoch,
               "share_walked_in_one_epoch": rate * epoch / s["data_rows"]}
        record["options"][label] = row
        print(f"  {label:26s} {rate:8.1f} samples/s ({row['dtype_used']}); one pass "
              f"{row['one_pass_seconds']:,.0f} s = {row['one_pass_epochs']:.1f} epochs; one "
              f"epoch walks {row['share_walked_in_one_epoch']:.2%} of the rows", flush=True)
    (args.work / "epoch_vs_default.json").write_text(json.dumps(record, indent=1) + "\n")


def uncapped(model, dataset, args, epoch: float) -> dict:
    """The default attribution until its own rule stops it (cap: ``args.uncapped`` epochs)."""
    res = attribute(model, dataset, max_seconds=args.uncapped * epoch, seed=args.seed,
                    quiet=True, device=args.device)
    s = res.settings
    cost = attribution_cost(s["seconds"], s["passes"], epoch)
    row = {"samples": res.count, "stop_reason": s["stop_reason"], "dtype_used": s["dtype_used"],
           "dtype_agreement": s["dtype_agreement"], "cost": cost,
           "worst_regret": (s.get("stop_cut") or {}).get("regret")}
    print(f"  default, no cap: {s['stop_reason']} after {res.count} samples; "
          f"{describe_cost(cost)}; {s['dtype_used']} (agreement with fp32 "
          + ", ".join(f"{k} {v:.4f}" for k, v in s["dtype_agreement"].items()) + ")",
          flush=True)
    return row


if __name__ == "__main__":
    main()
