"""One budget, one answer, measured: the default cut against the paper's at the same bytes.

On a trained run and its attribution (e.g. the demo's: ``reports/demo/runs/deepfm-s0`` and
``reports/demo/attributions/deepfm-s0-codebook.safetensors``), prints three tables:

1. a ladder of whole-artifact budgets, geometric from the smallest artifact with an int8 head
   (every entry pruned) to the dense model's size: the default (``shaver prune --bytes B``,
   the chooser picks values and head), and the paper's cut at the same bytes (fp32 values,
   int8 head; and fp32 head where it fits), test AUC / LogLoss each;
2. one fleet class at ``--class-bytes`` (default 1560KiB) that leaves the precisions to the
   chooser, through ``shaver.fleet`` itself;
3. the quality grid's sparsities and 4. the bytes frontier's table budgets (1/4 .. 1/128 of
   the fp32 table): the default's test AUC and LogLoss against the paper's cut's and the
   LogLoss of predicting the training click rate for every row (the constant).

Every figure is a test metric of the cut as its artifact computes it. Command (after
``shaver demo``; ``--sections 3,4`` for the last two tables alone):

    python bench/pruning/one_answer.py --run reports/demo/runs/deepfm-s0 \
        --attribution reports/demo/attributions/deepfm-s0-codebook.safetensors
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

from shaver.attribution.result import Attribution
from shaver.deploy.fleet import fleet
from shaver.errors import BudgetError
from shaver.pruning.api import cut, open_chooser
from shaver.runtime.tiered import TierSpec
from shaver.table.budget import Budget
from shaver.table.size import feature_map_metadata, plan_bytes
from shaver.train.checkpoint import load_run, open_run_dataset

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
FRACTIONS = (4, 8, 16, 32, 64, 128)


def _metrics(result) -> str:
    m = result.metrics
    return f"{m['auc']:.4f} / {m['logloss']:.4f}"


def ladder(model, dataset, steps: int = 6) -> list[int]:
    """``steps`` budgets, geometric from the smallest int8-head artifact to the dense one."""
    shape = tuple(model.embedding.weight.shape)
    meta = feature_map_metadata(dataset)
    low = plan_bytes(model, np.zeros(shape, np.uint8), [TierSpec("fp32")], head_dtype="int8",
                     metadata=meta, calibrated=True)[0]
    high = plan_bytes(model, np.ones(shape, np.uint8), [TierSpec("fp32")], metadata=meta)[0]
    return [int(round(low * (high / low) ** (i / (steps - 1)))) for i in range(steps)]


def constant_logloss(dataset) -> float:
    """Test LogLoss of predicting the training click rate for every row."""
    rate = float(np.mean(dataset.labels("train")))
    y = np.asarray(dataset.labels("test"), np.float64)
    return float(-np.mean(y * math.log(rate) + (1 - y) * math.log(1 - rate)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--attribution", type=Path, required=True)
    parser.add_argument("--class-bytes", default="1560KiB")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sections", default="1,2,3,4", help="which tables to print")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run, device="cpu")
    dataset = open_run_dataset(run)
    attr = Attribution.load(args.attribution)
    auto, names = open_chooser(run.model, attr, "auto", dataset=dataset)
    paper, paper_names = open_chooser(run.model, attr, "shaver", dataset=dataset)

    sections = {int(v) for v in args.sections.split(",")}
    if 1 in sections:
        whole_artifact(run, dataset, auto, names, paper, paper_names, args.steps)
    if 2 in sections:
        fleet_class(args.run, args.attribution, args.class_bytes)
    constant = constant_logloss(dataset)
    if 3 in sections:
        grid(auto, names, paper, paper_names, constant, "3. the quality grid's sparsities",
             [Budget.sparsity(s) for s in SPARSITIES])
    if 4 in sections:
        grid(auto, names, paper, paper_names, constant, "4. the bytes frontier's table budgets",
             [Budget.table_bytes(f"1/{n}") for n in FRACTIONS])


def whole_artifact(run, dataset, auto, names, paper, paper_names, steps: int) -> None:
    print("1. whole-artifact budgets: test AUC / LogLoss")
    print(f"{'budget B':>10}  {'default (chooser picks)':<26} {'its plan, head':<40} "
          f"{'paper, int8 head':<18} {'paper, fp32 head':<18}")
    for size in ladder(run.model, dataset, steps):
        budget = Budget.bytes_(size)
        best = cut(auto, names, budget, "auto")
        cells = []
        for head in ("int8", "fp32"):
            try:
                cells.append(_metrics(cut(paper, paper_names, budget, "shaver", heads=[head])))
            except BudgetError:
                cells.append("does not fit")
        plan = f"{best.info['winner']} ({best.artifact_bytes:,} B)"
        print(f"{size:>10,}  {_metrics(best):<26} {plan:<40} {cells[0]:<18} {cells[1]:<18}")



def fleet_class(run_dir: Path, attribution: Path, class_bytes: str) -> None:
    print(f"\n2. one fleet class of {class_bytes}, precisions left to the chooser")
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "fleet.yaml"
        spec.write_text(yaml.safe_dump({"classes": [{"name": "c", "bytes": class_bytes}]}))
        entry = fleet(run_dir, attribution, spec, Path(tmp) / "out").classes[0]
        test = entry["metrics"]["test"]
        print(f"{entry['row']['winner']}, {entry['bytes']:,} B: test AUC {test['auc']:.4f}, "
              f"LogLoss {test['logloss']:.4f} (measured on the written artifact)")



def grid(auto, names, paper, paper_names, constant: float, title: str, budgets) -> None:
    print(f"\n{title}: test AUC / LogLoss; the constant (training click rate) has LogLoss "
          f"{constant:.4f}")
    print(f"{'budget':>20}  {'default':<17} {'paper':<17}  default winner")
    for budget in budgets:
        best = cut(auto, names, budget, "auto")
        try:
            ref = _metrics(cut(paper, paper_names, budget, "shaver"))
        except BudgetError:
            ref = "does not fit"
        print(f"{budget.label:>20}  {_metrics(best):<17} {ref:<17}  {best.info['winner']}")


if __name__ == "__main__":
    main()
