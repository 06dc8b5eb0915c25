"""Why does the zero placeholder beat the codebook at high sparsity? Three hypotheses, measured.

    .venv/bin/python bench/pruning/placeholder_diagnosis.py --work runs/qg12 --model deepfm

Reuses quality_grid.py's work directory (trained run + codebook attribution). For the SAME
ranking (the paper's: codebook phi, |phi| order) at each sparsity, with the codebook and with
the zero placeholder:

1. sampling noise: test AUC of both and a paired bootstrap (same resampled test rows for both)
   of AUC(zero) - AUC(codebook): its 95 % interval;
2. distance of the pruned rows to the placeholders: over the pruned entries, weighted by how
   often their row occurs in the test split, the mean squared distortion (w - c)^2 against
   w^2, and the share of that weight on entries closer to 0 than to the codebook;
3. batch-norm statistics: test AUC after recomputing every BatchNorm's running mean/variance
   on the PRUNED model's inputs (train split, dropout off, cumulative average), both
   placeholders;
4. (DeepFM) which term the placeholder hurts: test AUC of the logit without the FM term and
   without the MLP term.
Prints one table; numbers go to bench/pruning/README.md.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from shaver.attribution.result import Attribution
from shaver.pruning.api import cut, open_chooser
from shaver.pruning.rankings import zero_placeholder
from shaver.pruning.scorers import data_frequencies, shapley_scores
from shaver.table.budget import Budget
from shaver.table.order import PruneOrder
from shaver.train.checkpoint import load_run, open_run_dataset

SPARSITIES = (0.5, 0.9, 0.95, 0.99, 0.999)


def probabilities(model, x: np.ndarray, parts: str = "all") -> np.ndarray:
    """Test probabilities; ``parts``: "all", "no-fm" or "no-mlp" (DeepFM terms dropped)."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(x), 8192):
            ids = torch.from_numpy(np.asarray(x[lo:lo + 8192], dtype=np.int64))
            emb = model.embedding(ids)
            if parts == "all":
                logit = model.head(emb, ids)
            else:
                logit = model.linear(ids)
                logit = logit + (model.mlp(emb.flatten(1)).squeeze(1) if parts == "no-fm"
                                 else model.fm(emb))
            out.append(torch.sigmoid(logit.float()).reshape(-1))
    return torch.cat(out).numpy()


def paired_bootstrap(y, p_zero, p_cb, draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """95 % interval of AUC(zero) - AUC(codebook) over test rows resampled with replacement."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(draws):
        idx = rng.integers(0, len(y), len(y))
        diffs.append(roc_auc_score(y[idx], p_zero[idx]) - roc_auc_score(y[idx], p_cb[idx]))
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def distortion(weight: np.ndarray, mask: np.ndarray, codebook: np.ndarray, field_dims,
               freq: np.ndarray) -> dict[str, float]:
    """Occurrence-weighted distortion of the pruned entries under each placeholder."""
    rows_field = np.repeat(np.arange(len(field_dims)), field_dims)
    c = codebook[rows_field]
    pruned = ~mask
    w8 = freq[:, None] * pruned
    total = max(w8.sum(), 1e-12)
    to_cb = float((w8 * (weight - c) ** 2).sum() / total)
    to_zero = float((w8 * weight ** 2).sum() / total)
    closer_zero = float((w8 * (np.abs(weight) < np.abs(weight - c))).sum() / total)
    return {"mse_codebook": to_cb, "mse_zero": to_zero, "share_closer_to_zero": closer_zero}


def recalibrated(model, dataset, rows: int = 40000) -> torch.nn.Module:
    """A copy whose BatchNorm running statistics are recomputed on ``rows`` train rows."""
    clone = copy.deepcopy(model).eval()
    norms = [m for m in clone.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    x = np.asarray(dataset.ids("train")[:rows], dtype=np.int64)
    with torch.no_grad():
        for lo in range(0, len(x), 4096):
            clone(torch.from_numpy(x[lo:lo + 4096]))
    return clone.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("runs/qg12"))
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.work / f"run-{args.model}", device="cpu")
    dataset = open_run_dataset(run)
    attr = Attribution.load(args.work / f"run-{args.model}" / "attribution-codebook.safetensors")
    model = run.model.eval()
    freq_attr = data_frequencies(dataset, "train+val")
    x_test = np.asarray(dataset.ids("test"), dtype=np.int64)
    y_test = np.asarray(dataset.labels("test"), dtype=np.float64)
    freq_test = np.bincount(x_test.reshape(-1), minlength=dataset.num_features).astype(float)
    scores = shapley_scores(attr)
    # the paper's cut (one fixed candidate: |phi| order, fp32 values) with each placeholder
    choosers = {name: open_chooser(model, s, "scores", dataset=dataset, frequencies=freq_attr)
                for name, s in (("codebook", scores), ("zero", zero_placeholder(scores)))}
    paper_order = PruneOrder(scores.values, "abs")
    weight = model.embedding.weight.detach().numpy().astype(np.float64)
    out = []
    for s in SPARSITIES:
        row = {"sparsity": s}
        probs = {}
        for name, (chooser, names) in choosers.items():
            pruned = cut(chooser, names, Budget.sparsity(s), "scores", evaluate=False).model
            probs[name] = probabilities(pruned, x_test)
            row[f"auc_{name}"] = roc_auc_score(y_test, probs[name])
            row[f"auc_{name}_bn"] = roc_auc_score(
                y_test, probabilities(recalibrated(pruned, dataset), x_test))
            if args.model == "deepfm":
                for parts in ("no-fm", "no-mlp"):
                    row[f"auc_{name}_{parts}"] = roc_auc_score(
                        y_test, probabilities(pruned, x_test, parts))
        row["ci_zero_minus_cb"] = paired_bootstrap(y_test, probs["zero"], probs["codebook"])
        mask = paper_order.mask(Budget.sparsity(s).kept_entries(paper_order.total))
        row.update(distortion(weight, mask, attr.codebook.numpy().astype(np.float64),
                              model.field_dims, freq_test))
        out.append(row)
        print(json.dumps(row), flush=True)
    (args.work / f"placeholder-diagnosis-{args.model}.json").write_text(
        json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
