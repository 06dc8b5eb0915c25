"""What reusing the previous attribution saves when the model is refreshed (fine-tuned).

MovieLens-100k DeepFM and its attribution (the run of bench/deploy/head_quant_auc.py,
built if absent). The "refreshed" model is that model fine-tuned for ``--epochs`` more epochs
at ``--lr`` on the train split. ``--walks`` walks over D (train+val) are run through both
models on the same rows and permutations (shaver.attribution.refresh.paired_walks).
Reported, per walk and summed over entries:

* rho = Var(credit_new - credit_old) / Var(credit_new): how much the old model's credits
  explain of the new ones (the control variate's strength);
* seconds per paired walk vs per plain walk of the new model (attribute(), same walks);
* at EQUAL time, the total variance (sum of squared standard errors) of the refreshed
  estimate (difference + the old attribution's own variance) vs a fresh attribution.

    nice -n 10 .venv/bin/python bench/attribution/bench_refresh.py            # ~3 min
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))


def main(argv: list[str] | None = None) -> int:
    from head_quant_auc import trained_run

    from shaver.attribution.api import attribute
    from shaver.attribution.refresh import paired_walks, variance_ratio
    from shaver.attribution.sampling import SampleSource
    from shaver.train.loop import fit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("reports/bench-head-quant"))
    parser.add_argument("--walks", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    old_model, dataset, old = trained_run(args.workdir, 8, 30_000, 0, True)
    new_model = copy.deepcopy(old_model)
    fit(new_model, dataset, epochs=args.epochs, lr=args.lr, seed=1, quiet=True, device="cpu",
        patience=None)
    new_model.eval()
    source = SampleSource(dataset, str(old.settings.get("data", "train+val")), seed=5)
    start = time.perf_counter()
    diff, alone, _ = paired_walks(new_model, old_model, old, source, args.walks, 5, 1024,
                                  "fast", torch.device("cpu"), True)
    paired_s = time.perf_counter() - start
    start = time.perf_counter()
    attribute(new_model, dataset, max_samples=args.walks, tolerance=None, quiet=True,
              device="cpu", seed=5, control_variate=False)
    plain_s = time.perf_counter() - start
    rho = variance_ratio(diff, alone)
    per_walk_var_new = float((alone.sumsq / alone.count - (alone.sum / alone.count) ** 2).sum())
    per_walk_var_diff = float((diff.sumsq / diff.count - (diff.sum / diff.count) ** 2).sum())
    old_var = float((old.stderr.double() ** 2).sum())
    budget = plain_s  # equal time: what a fresh attribution of --walks walks costs
    fresh_total = per_walk_var_new / args.walks
    refresh_walks = args.walks * plain_s / paired_s
    refresh_total = per_walk_var_diff / refresh_walks + old_var
    print(f"MovieLens-100k DeepFM fine-tuned {args.epochs} epoch(s) at lr {args.lr}; old "
          f"attribution {old.count} walks; {args.walks} paired walks, 1 thread")
    print(f"  rho (summed variances) {rho['total']:.3f}, median per entry {rho['median']:.3f}")
    print(f"  seconds: paired {paired_s:.2f}, plain {plain_s:.2f} (x{paired_s / plain_s:.2f})")
    print(f"  in {budget:.1f} s: fresh total variance {fresh_total:.3e} "
          f"vs refreshed {refresh_total:.3e} (of which the old attribution's {old_var:.3e})"
          f" -> ratio {refresh_total / fresh_total:.2f}")
    walks_for_fresh_equal = per_walk_var_new / max(refresh_total, 1e-300)
    print(f"  a fresh attribution needs {walks_for_fresh_equal:,.0f} walks "
          f"({walks_for_fresh_equal / args.walks * plain_s:.1f} s) to match the refreshed "
          f"estimate's total variance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
