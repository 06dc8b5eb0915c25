"""Benchmark: time to a converged attribution, and what the number of samples buys.

On a real dataset (the built-in MovieLens-100k, DeepFM d=16 MLP 400x3 trained here, seeded)
with D = a fixed subset of train+val, this prints:

  * time to SAGE's stopping rule (max stderr / (max phi - min phi) < tolerance after one full
    pass over D) for: the reference loop (fp32), the fast engine (fp32), with antithetic
    pairs, with the control variate, with both, and with both in int8 -- the ratio of each to
    the reference loop's time, measured in the same run;
  * for growing numbers of attributed samples: Spearman of phi vs a long run (several passes,
    another seed), and test AUC after pruning 80% and 95% of the entries by |phi|.

Sample counts are deterministic (seeded); seconds depend on the machine, so run on a quiet one:

    .venv/bin/python bench/attribution/bench_convergence.py --threads 2 --work runs/bench-conv
    .venv/bin/python bench/attribution/bench_convergence.py --threads 2 --work runs/bench-conv \
        --surrogate-points 4   # the settings of the README's time-to-tolerance figures
    .venv/bin/python bench/attribution/bench_convergence.py --quick --work /tmp/conv   # smoke
    .venv/bin/python bench/attribution/bench_convergence.py --work W --run runs/criteo-deepfm
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from shaver.attribution.api import attribute
from shaver.attribution.estimator.mlp import int8_available
from shaver.data.builtin import load_builtin
from shaver.models.registry import build_model
from shaver.pruning.api import prune
from shaver.train.checkpoint import load_run, open_run_dataset
from shaver.train.device import pick_device
from shaver.train.evaluation import evaluate
from shaver.train.loop import fit

SPARSITIES = (0.8, 0.95)


def trained_deepfm(dataset, work: Path, epochs: int, device):
    run_dir = work / "deepfm"
    if not (run_dir / "config.json").exists():
        torch.manual_seed(0)
        model = build_model("deepfm", dataset, embed_dim=16, mlp_dims=[400, 400, 400])
        fit(model, dataset, epochs=epochs, lr=1e-3, weight_decay=1e-5, batch_size=2048,
            patience=2, seed=0, device=device, out_dir=run_dir, quiet=True)
    return load_run(run_dir, device=device).model.eval()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.double().argsort().argsort().double()
    rb = b.double().argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def pruned_auc(model, result, dataset, device) -> dict[str, float]:
    runs = prune(model, result, list(SPARSITIES), dataset=dataset, device=device,
                 method="shaver")  # the paper's cut: the ranking is what is measured
    return {f"auc@{s}": r.metrics["auc"] for s, r in zip(SPARSITIES, runs)}


VARIANTS = [("reference", dict(engine="reference")), ("fast", {}),
            ("fast antithetic", dict(antithetic=True)),
            ("fast control-variate", dict(control_variate=True)),
            ("fast antithetic+cv", dict(antithetic=True, control_variate=True)),
            ("fast int8 antithetic+cv", dict(dtype="int8", antithetic=True,
                                              control_variate=True))]


def time_to_tolerance(model, dataset, args, device) -> list[dict]:
    """Each variant walks the same number of permutations (an antithetic pair is 2 walks);
    the SAGE ratio reached is deterministic, and the time to the tolerance follows from the
    measured time: measured if the rule stopped the run, else extrapolated with the ratio
    falling as 1/sqrt(samples) (time x (ratio / tolerance)^2)."""
    rows = []
    for label, kw in VARIANTS:
        if kw.get("dtype") == "int8" and not int8_available(device):
            continue
        pairs = 2 if kw.get("antithetic") else 1
        began = time.perf_counter()
        res = attribute(model, dataset, data=args.data, tolerance=args.tolerance,
                        max_samples=args.walks // pairs, batch_size=args.batch_size, seed=0,
                        device=device, quiet=True,
                        surrogate_points=args.surrogate_points,
                        **{"stop": "sage", "dtype": "fp32", "control_variate": False, **kw})
        secs = time.perf_counter() - began
        ratio = res.settings["convergence_ratio"]
        converged = res.settings["stop_reason"] == "converged"
        rows.append({"run": label, "seconds": secs, "samples": res.count,
                     "walks_per_s": res.count * pairs / secs, "ratio": ratio,
                     "converged": converged, "dtype_used": res.settings.get("dtype_used"),
                     "seconds_to_tolerance": secs if converged else
                     secs * (ratio / args.tolerance) ** 2, "result": res})
        print(f"  .. {label}: {secs:.1f}s, {res.count} samples, ratio {ratio:.4f}", flush=True)
    return rows


def quality_by_samples(model, dataset, args, device, long) -> list[dict]:
    touched = long.phi.reshape(-1) != 0
    rows = []
    for k in args.samples:
        res = attribute(model, dataset, data=args.data, tolerance=None, max_samples=k,
                        batch_size=args.batch_size, seed=1, device=device, quiet=True,
                        stop="sage", dtype="fp32", control_variate=False)
        rows.append({"samples": k, "spearman_vs_long": spearman(
            res.phi.reshape(-1)[touched], long.phi.reshape(-1)[touched]),
            **pruned_auc(model, res, dataset, device)})
        print(f"  .. {k} samples done", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder caching the trained model")
    p.add_argument("--run", type=Path, default=None,
                   help="a trained run (shaver train) to use instead of training DeepFM on "
                   "MovieLens-100k; its dataset is reopened from the run")
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--tolerance", type=float, default=None,
                   help="stopping tolerance (default 0.01 as the paper; 0.05 with --quick)")
    p.add_argument("--subset", type=int, default=None,
                   help="D = this many samples of train+val (default 20000; 2000 with --quick)")
    p.add_argument("--walks", type=int, default=None,
                   help="permutation walks per variant (default 60000; 8000 with --quick)")
    p.add_argument("--long-samples", type=int, default=None,
                   help="samples of the long reference run (default 200000; 8000 with --quick)")
    p.add_argument("--samples", default=None,
                   help="comma list of sample counts for the quality table "
                   "(default 2000,5000,20000,80000; 500,2000 with --quick)")
    p.add_argument("--surrogate-points", type=int, default=1,
                   help="quadrature points of the control variate's surrogate (default 1, "
                   "as shaver attribute; the README's time-to-tolerance figures used 4)")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    quick = args.quick
    args.data = f"train+val:{args.subset or (2000 if quick else 20000)}"
    args.tolerance = args.tolerance or (0.05 if quick else 0.01)
    args.batch_size = 256
    args.walks = args.walks or (8000 if quick else 60000)
    args.samples = ([int(v) for v in args.samples.split(",")] if args.samples else
                    [500, 2000] if quick else [2000, 5000, 20000, 80000])
    long_samples = args.long_samples or (8000 if quick else 200000)
    if args.run:
        run = load_run(args.run, device=device)
        model, dataset = run.model.eval(), open_run_dataset(run)
        what = f"{run.config.get('model', {}).get('name', 'model')} of {args.run}"
    else:
        dataset = load_builtin("movielens-100k")
        model = trained_deepfm(dataset, args.work, 2 if quick else 10, device)
        what = "DeepFM on MovieLens-100k"
    base = evaluate(model, dataset, "test", device=device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"{what}: test AUC {base['auc']:.4f}; D = {args.data}")
    runs = time_to_tolerance(model, dataset, args, device)
    ref = runs[0]["seconds_to_tolerance"]
    print(f"\ntime to tolerance {args.tolerance} (same {args.walks} walks per run, batch "
          f"{args.batch_size}; * = extrapolated from the ratio reached):")
    print(f"  {'run':24} {'walks/s':>8} {'ratio':>7} {'to tol (s)':>11} {'x ref':>6}  "
          f"auc@0.8 auc@0.95")
    for r in runs:
        auc = pruned_auc(model, r["result"], dataset, device)
        r.update(auc)
        mark = "" if r["converged"] else "*"
        print(f"  {r['run']:24} {r['walks_per_s']:8.0f} {r['ratio']:7.4f} "
              f"{r['seconds_to_tolerance']:10.0f}{mark:1} {ref / r['seconds_to_tolerance']:6.2f}  "
              f"{auc['auc@0.8']:.4f}  {auc['auc@0.95']:.4f}")
    long = attribute(model, dataset, data=args.data, tolerance=None, max_samples=long_samples,
                     batch_size=1024, seed=99, device=device, quiet=True, stop="sage",
                     dtype="fp32", control_variate=False)
    quality = quality_by_samples(model, dataset, args, device, long)
    print(f"\nquality vs samples attributed (fast fp32, seed 1; long run: {long_samples} "
          f"samples, seed 99; base AUC {base['auc']:.4f}):")
    print(f"  {'samples':>8} {'spearman':>9} {'auc@0.8':>8} {'auc@0.95':>9}")
    for q in quality:
        print(f"  {q['samples']:8d} {q['spearman_vs_long']:9.4f} {q['auc@0.8']:8.4f} "
              f"{q['auc@0.95']:9.4f}")
    if args.out:
        for r in runs:
            r.pop("result")
        args.out.write_text(json.dumps({"base": base, "runs": runs, "quality": quality},
                                       indent=2, default=float))


if __name__ == "__main__":
    main()
