"""What a quantised head costs: artifact bytes and test AUC per (values, head) precision.

MovieLens-100k DeepFM (400-400-400 MLP with batch norm, d = 16; ``--model dcn-mix`` for
DCN-Mix), trained here (or reused from ``--workdir``), Shaver attribution (codebook placeholder, ``--samples`` walks), then
for each sparsity the same cut (the paper's ranking through the chooser, one fixed
candidate per precision pair: ``cut(..., values=[v], heads=[h])``) exported with values
fp32 / int8 (one tier of the plan: fp32 writes format v1, int8 a v2 tier with per-field
scales) and head fp32 / fp16 / int8. AUC and LogLoss are measured on the test split by running the ARTIFACT (its
dequantised tensors in torch). The baseline, in the same run: the dense fp32 file
(sparsity 0, fp32 values and head) and, per cut, the fp32-head artifact.

    nice -n 10 .venv/bin/python bench/deploy/head_quant_auc.py            # ~3-5 min on 1 thread
    nice -n 10 .venv/bin/python bench/deploy/head_quant_auc.py --sparsity 0.95
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

GRID = (("fp32", "fp32"), ("fp32", "fp16"), ("fp32", "int8"), ("int8", "fp32"),
        ("int8", "fp16"), ("int8", "int8"))


def trained_run(workdir: Path, epochs: int, samples: int, seed: int, quiet: bool,
                model_name: str = "deepfm"):
    """(model, dataset, attribution) of a MovieLens run kept under ``workdir``."""
    from shaver.attribution.api import attribute
    from shaver.attribution.result import Attribution
    from shaver.data.builtin import load_builtin
    from shaver.models.registry import build_model
    from shaver.train.checkpoint import load_run
    from shaver.train.loop import fit

    dataset = load_builtin("movielens-100k", quiet=quiet)
    run_dir = workdir / ("run" if model_name == "deepfm" else f"run-{model_name}")
    if not (run_dir / "config.json").is_file():
        model = build_model(model_name, dataset, seed=seed)
        fit(model, dataset, epochs=epochs, seed=seed, out_dir=run_dir, quiet=quiet)
    model = load_run(run_dir, device="cpu").model
    attr_path = run_dir / "attribution-codebook.safetensors"
    if not attr_path.is_file():
        attribute(model, dataset, max_samples=samples, seed=seed, quiet=quiet,
                  device="cpu").save(attr_path)
    return model, dataset, Attribution.load(attr_path)


def artifact_metrics(path: Path, dataset) -> dict[str, float]:
    from shaver.deploy.embedding import compressed_model
    from shaver.train.evaluation import evaluate

    got = evaluate(compressed_model(path), dataset, "test", device="cpu")
    return {"auc": float(got["auc"]), "logloss": float(got["logloss"])}


def measure(model, dataset, attribution, sparsities: list[float]) -> dict:
    from shaver.deploy.artifact import export_artifact
    from shaver.pruning.api import cut, open_chooser
    from shaver.table.budget import Budget
    from shaver.table.size import feature_map_metadata

    meta = feature_map_metadata(dataset) or {}
    # the paper's ranking, sorted once; each (values, head) is its fixed candidate at the
    # budget: the same kept entries, stored in that value dtype (one tier) and head dtype
    chooser, names = open_chooser(model, attribution, "shaver", dataset=dataset, device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dense = export_artifact(model, Path(tmp) / "dense.shaver", metadata=meta)
        base = {"bytes": dense.bytes, **artifact_metrics(dense.path, dataset)}
        for sparsity in sparsities:
            for values, head in GRID:
                pruned = cut(chooser, names, Budget.sparsity(sparsity), "shaver",
                             values=[values], heads=[head], evaluate=False)
                out = export_artifact(pruned, Path(tmp) / "a.shaver", metadata=meta)
                rows.append({"sparsity": sparsity, "values": values, "head": head,
                             "bytes": out.bytes, "of_dense": out.bytes / dense.bytes,
                             "head_bytes": out.breakdown["head"],
                             "first_order_bytes": out.breakdown["first_order"],
                             **artifact_metrics(out.path, dataset)})
    return {"dense": base, "rows": rows}


def print_table(result: dict) -> None:
    dense = result["dense"]
    print(f"dense fp32 artifact: {dense['bytes']:,} bytes, test AUC {dense['auc']:.4f}, "
          f"LogLoss {dense['logloss']:.4f}")
    print(f"{'sparsity':>8} {'values':>6} {'head':>5} {'bytes':>10} {'of dense':>8} "
          f"{'head B':>8} {'AUC':>7} {'dAUC vs fp32 head':>18} {'LogLoss':>8}")
    ref = {}
    for row in result["rows"]:
        if row["head"] == "fp32":
            ref[(row["sparsity"], row["values"])] = row["auc"]
        delta = row["auc"] - ref[(row["sparsity"], row["values"])]
        print(f"{row['sparsity']:>8g} {row['values']:>6} {row['head']:>5} {row['bytes']:>10,} "
              f"{row['of_dense']:>8.1%} {row['head_bytes']:>8,} {row['auc']:>7.4f} "
              f"{delta:>+18.5f} {row['logloss']:>8.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("reports/bench-head-quant"))
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.8, 0.95, 0.99])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--model", default="deepfm", help="deepfm (default), dcn-mix, ...")
    parser.add_argument("--samples", type=int, default=30_000, help="attribution walks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, dataset, attribution = trained_run(args.workdir, args.epochs, args.samples,
                                              args.seed, args.quiet, args.model)
    result = measure(model, dataset, attribution, args.sparsity)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
