"""When does the default attribution stop by itself, what does it cost in training epochs,
and are its cuts as good as a longer attribution's? One model, one machine, one run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/attribution/stop_on_evidence.py \\
        --work runs/soe-ml --model deepfm --threads 1 --label new --reference 10
    # today's default, from a checkout of the commit before (same --work: same model)
    OMP_NUM_THREADS=1 PYTHONPATH=/tmp/base/src .venv/bin/python \\
        bench/attribution/stop_on_evidence.py --work runs/soe-ml --model deepfm --threads 1 \\
        --label today --min-passes 1
    .venv/bin/python bench/attribution/stop_on_evidence.py --dataset synthetic-criteo \\
        --rows 1000000 --work runs/soe-criteo --threads 1 --label new --reference 10
    .venv/bin/python bench/attribution/stop_on_evidence.py --dataset criteo-sample \\
        --work runs/soe-criteo10k --threads 1 --label new

For the model trained once in --work (reused by every label), in this run: one training
epoch's wall seconds (one epoch of ``fit`` on a copy), Taylor |w dL/dw| (its cut), the
attribution with the library's defaults and no cap (``--min-passes`` overrides the floor),
and with ``--reference F`` the same estimator given F times the default's wall seconds (other
seed): the seconds, training epochs and passes each took, and the test AUC after the paper's
cut and after the default cut (``auto``) at ``--sparsity``. Prints the CPU's features; writes
``WORK/soe-LABEL.json``. Uses only API arguments that exist before and after issue 23, so a
checkout of the previous commit measures "today's default" on the same model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pruning"))
from grid_data import epoch_seconds, open_grid_dataset, trained  # noqa: E402

from shaver.attribution.api import attribute  # noqa: E402
from shaver.attribution.estimator.hardware import cpu_summary  # noqa: E402
from shaver.pruning.api import prune  # noqa: E402
from shaver.pruning.scorers import compute_scores  # noqa: E402

CRITEO_SAMPLE = Path(__file__).resolve().parents[3] / "shared/data/criteo/train_head10000.txt"


def open_data(args):
    if args.dataset != "criteo-sample":
        return open_grid_dataset(args.dataset, args.rows, args.work)[0]
    from shaver.data.prepare import prepare_dataset
    from shaver.data.store import PreparedDataset

    out = args.work / "criteo-sample"
    if not (out / "meta.json").is_file():
        prepare_dataset("criteo", args.criteo_sample, out, quiet=True)
    return PreparedDataset(out)


def cuts(model, scores, dataset, sparsities, auto: bool) -> dict:
    method = "shaver" if auto else None
    out = {"auc": [r.metrics["auc"] for r in prune(model, scores, sparsities, dataset=dataset,
                                                   method=method)]}
    if auto:
        out["auc_auto"] = [r.metrics["auc"] for r in prune(model, scores, sparsities,
                                                          dataset=dataset, method="auto")]
    return out


def one(label: str, model, dataset, sparsities, epoch: float, **kw) -> dict:
    res = attribute(model, dataset, quiet=True, **kw)
    s = res.settings
    row = {"label": label, "samples": res.count, "seconds": s["seconds"], "passes": s["passes"],
           "epochs": s["seconds"] / epoch, "dtype_used": s["dtype_used"],
           "stop_reason": s["stop_reason"], "stop_cut": s.get("stop_cut"),
           **cuts(model, res, dataset, sparsities, True)}
    print(f"  {label:12s} {row['seconds']:8.1f} s = {row['epochs']:6.2f} epochs, "
          f"{row['passes']:.3f} passes, {res.count} samples, {row['dtype_used']}, "
          f"{row['stop_reason']}; paper's cut " + " / ".join(f"{a:.4f}" for a in row["auc"])
          + "; auto " + " / ".join(f"{a:.4f}" for a in row["auc_auto"]), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="movielens-100k",
                    choices=("movielens-100k", "synthetic-criteo", "criteo-sample"))
    ap.add_argument("--criteo-sample", type=Path, default=CRITEO_SAMPLE)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-epochs", type=int, default=10)
    ap.add_argument("--label", default="default")
    ap.add_argument("--min-passes", type=float, default=None,
                    help="override the library's floor (default: the library's default)")
    ap.add_argument("--reference", type=float, default=0.0,
                    help="also run the estimator for F times the default's seconds (0: no)")
    ap.add_argument("--reference-only", type=float, default=None, metavar="SECONDS",
                    help="skip the default; run only the reference, for SECONDS")
    ap.add_argument("--sparsity", default="0.8,0.95,0.99")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    dataset = open_data(args)
    sparsities = [float(s) for s in args.sparsity.split(",")]
    model = trained(args.model, dataset, args.work, args.seed, args.train_epochs)
    epoch = epoch_seconds(model, dataset, args.seed)
    print(f"cpu: {cpu_summary()}, {torch.get_num_threads()} threads; {args.dataset} "
          f"{args.model}; one training epoch {epoch:.1f} s", flush=True)
    record = {"dataset": args.dataset, "model": args.model, "seed": args.seed,
              "cpu": cpu_summary(), "threads": torch.get_num_threads(),
              "epoch_seconds": epoch, "sparsity": sparsities, "rows": []}
    began = time.perf_counter()
    taylor = compute_scores("taylor", model, dataset=dataset, placeholder="codebook")
    record["taylor"] = {"seconds": time.perf_counter() - began,
                        **cuts(model, taylor, dataset, sparsities, False)}
    print("  taylor       " + " / ".join(f"{a:.4f}" for a in record["taylor"]["auc"]))
    reference = {"seed": args.seed + 1000, "stop": "sage", "tolerance": None}
    if args.reference_only is not None:
        record["rows"].append(one(f"ref {args.reference_only:g}s", model, dataset, sparsities,
                                  epoch, max_seconds=args.reference_only, **reference))
        args.reference = 0
    else:
        floor = {} if args.min_passes is None else {"min_passes": args.min_passes}
        row = one(args.label, model, dataset, sparsities, epoch, seed=args.seed, **floor)
        record["rows"].append(row)
    if args.reference > 0:
        record["rows"].append(one(f"ref x{args.reference:g}", model, dataset, sparsities, epoch,
                                  max_seconds=args.reference * row["seconds"], **reference))
    path = args.work / f"soe-{args.label}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
