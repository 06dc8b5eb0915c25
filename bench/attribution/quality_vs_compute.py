"""Quality against compute: test AUC after pruning vs attribution seconds, one machine, one run.

    .venv/bin/python bench/attribution/quality_vs_compute.py --work runs/qvc-ml --model deepfm
    .venv/bin/python bench/attribution/quality_vs_compute.py --work runs/qvc-ml --model dcn-mix
    .venv/bin/python bench/attribution/quality_vs_compute.py --dataset synthetic-criteo \
        --rows 1000000 --work runs/qvc-criteo --model deepfm
    .venv/bin/python bench/attribution/quality_vs_compute.py --quick --work /tmp/qvc   # smoke

For one trained model (cached in --work) it measures, on this machine and in this run:

* one training epoch's wall seconds (one epoch of ``fit`` on a copy of the model: the
  compute unit of the x axis, drawn as a marker);
* Taylor |w dL/dw| and magnitude |w| (flat references; Taylor's seconds are printed);
* for each estimator option, the attribution capped at ``--epochs`` multiples of that epoch
  (one stream, each cap continuing the previous one's saved state, so a curve costs its
  largest cap): the paper's estimator (fast engine, fp32, plain walks), ``dtype auto``
  (plain walks), ``default`` (what ``shaver attribute`` does with no option: dtype auto and
  the sampled control variate, its surrogate mean from a sample that grows with the walks),
  ``auto + cv`` (exact mean, one up-front pass), ``auto + antithetic + cv``; every option
  on the default attribution data (train);
* a long "converged" attribution (``--long-passes`` passes of antithetic walks with the
  exact control variate, fp32, same data; cached in --work, so reruns reuse it): the
  ceiling.

Every point: test AUC / LogLoss at ``--sparsity`` after the paper's cut (codebook
placeholder, |phi| order), and (``auc_auto``, unless ``--no-auto``) after the default cut,
``auto``: the best candidate on validation, Taylor and magnitude among them (their scores are
computed once per run and reused: the same model gives the same scores; the seconds of one
default cut are printed as ``auto cut seconds``). Prints the table and the CPU's features,
writes ``qvc.json`` and ``qvc.png``; ``shaver report WORK`` renders it as an HTML report (and adds it to a bench report in the
same folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pruning"))
from grid_data import DATASETS, epoch_seconds, open_grid_dataset, trained  # noqa: E402

from shaver.attribution.api import attribute  # noqa: E402
from shaver.attribution.estimator.hardware import cpu_summary  # noqa: E402
from shaver.attribution.result import Attribution  # noqa: E402
from shaver.attribution.sampling import DEFAULT_DATA  # noqa: E402
from shaver.pruning.api import prune  # noqa: E402
from shaver.pruning.scorers import compute_scores  # noqa: E402
from shaver.report.compute_section import quality_vs_compute_figure  # noqa: E402

OPTIONS = {
    "paper (fp32)": dict(dtype="fp32", control_variate=False),
    "auto": dict(dtype="auto", control_variate=False),
    "default": dict(),  # dtype auto + the sampled control variate
    "auto + cv": dict(dtype="auto", control_variate="exact"),
    "auto + anti + cv": dict(dtype="auto", control_variate="exact", antithetic=True),
}


def test_metrics(model, scores, dataset, sparsities, auto: bool = False
                 ) -> dict[str, list[float]]:
    method = "shaver" if isinstance(scores, Attribution) else None  # the paper's cut, not auto
    runs = prune(model, scores, list(sparsities), dataset=dataset, method=method)
    out = {"auc": [r.metrics["auc"] for r in runs],
           "logloss": [r.metrics["logloss"] for r in runs]}
    if auto and isinstance(scores, Attribution):
        chosen = prune(model, scores, list(sparsities), dataset=dataset, method="auto")
        out["auc_auto"] = [r.metrics["auc"] for r in chosen]
        out["logloss_auto"] = [r.metrics["logloss"] for r in chosen]
        out["auto_winner"] = [r.info.get("winner") for r in chosen]
    return out


def reuse_single_shot_scores() -> None:
    """auto's magnitude / Taylor candidates (the chooser's single-shot rankings): computed
    once, then reused (same model)."""
    import shaver.pruning.rankings as rankings_mod

    cache: dict = {}
    original = rankings_mod.compute_scores

    def cached(scorer, model, **kw):
        key = (scorer, id(model), kw.get("placeholder"), kw.get("data"))
        if key not in cache:
            cache[key] = original(scorer, model, **kw)
        return cache[key]

    rankings_mod.compute_scores = cached


def capped_curve(model, dataset, label: str, kw: dict, caps: list[float], work: Path,
                 sparsities, seed: int, auto: bool, auto_caps: set[int] | None = None
                 ) -> list[dict]:
    """One attribution stream grown to each cap in turn (resumed from its saved state)."""
    state = work / f"state-{label.replace(' ', '_').replace('+', 'p')}.safetensors"
    state.unlink(missing_ok=True)
    spent, points = 0.0, []
    for index, cap in enumerate(caps):
        began = time.perf_counter()
        res = attribute(model, dataset, placeholder="codebook", stop="sage", tolerance=None,
                        max_seconds=max(cap - spent, 1e-3), seed=seed, quiet=True,
                        checkpoint_path=state, resume=True, **kw)
        spent += time.perf_counter() - began
        point = {"option": label, "seconds": spent, "samples": res.count,
                 "passes": res.settings["passes"], "dtype_used": res.settings["dtype_used"],
                 "surrogate_rows": res.settings.get("surrogate_rows_seen"),
                 **test_metrics(model, res, dataset, sparsities,
                                auto and (auto_caps is None or index in auto_caps))}
        points.append(point)
        print(f"  {label:18s} {spent:8.1f}s {res.count:9d} samples "
              + " ".join(f"{a:.4f}" for a in point["auc"])
              + ("  auto " + " ".join(f"{a:.4f}" for a in point["auc_auto"])
                 if "auc_auto" in point else ""),
              flush=True)
    state.unlink(missing_ok=True)
    return points


def converged(model, dataset, work: Path, name: str, passes: float, seed: int) -> Attribution:
    path = work / f"converged-{name}-s{seed}-{DEFAULT_DATA}-{passes:g}passes.safetensors"
    if path.is_file():
        return Attribution.load(path)
    size = dataset.num_rows(DEFAULT_DATA)
    res = attribute(model, dataset, placeholder="codebook", stop="sage", tolerance=None,
                    max_samples=int(passes * size), dtype="fp32", control_variate="exact",
                    antithetic=True, seed=seed + 1000, quiet=False)
    res.save(path)
    return res


def plot(record: dict, path: Path) -> None:
    quality_vs_compute_figure(record).savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=DATASETS, default="movielens-100k")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--model", default="deepfm")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-epochs", type=int, default=10)
    ap.add_argument("--epochs", default="0.25,0.5,1,2,3",
                    help="attribution caps, in training epochs (default %(default)s)")
    ap.add_argument("--sparsity", default="0.8,0.95,0.99")
    ap.add_argument("--long-passes", type=float, default=4.0)
    ap.add_argument("--options", default=",".join(OPTIONS))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-auto", action="store_true", help="only the paper's cut")
    ap.add_argument("--auto-at", default=None, metavar="E,E,...",
                    help="evaluate the default cut only at these caps (of --epochs; default: "
                    "every cap); on large data each default cut costs validation passes")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny caps, 0.2 passes")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    dataset, info = open_grid_dataset(args.dataset, args.rows, args.work)
    sparsities = [float(s) for s in args.sparsity.split(",")]
    model = trained(args.model, dataset, args.work, args.seed, 1 if args.quick else
                    args.train_epochs)
    print(f"cpu: {cpu_summary()}, {torch.get_num_threads()} threads; {args.dataset} "
          f"{args.model}", flush=True)
    epoch = epoch_seconds(model, dataset, args.seed)
    caps = [float(e) * epoch for e in args.epochs.split(",")]
    if args.quick:
        caps = [c / 20 for c in caps[:2]]
    print(f"one training epoch: {epoch:.1f} s; caps {', '.join(f'{c:.1f}' for c in caps)} s")
    record = {"dataset": args.dataset, "model": args.model, "seed": args.seed,
              "cpu": cpu_summary(),
              "threads": torch.get_num_threads(), "epoch_seconds": epoch, "caps": caps,
              "sparsity": sparsities, "info": info, "points": []}
    for ref in ("taylor", "magnitude"):
        began = time.perf_counter()
        scores = compute_scores(ref, model, dataset=dataset, placeholder="codebook")
        record[ref] = {"seconds": time.perf_counter() - began,
                       **test_metrics(model, scores, dataset, sparsities)}
        print(f"  {ref:18s} {record[ref]['seconds']:8.1f}s "
              + " ".join(f"{a:.4f}" for a in record[ref]["auc"]), flush=True)
    long = converged(model, dataset, args.work, args.model, 0.2 if args.quick
                     else args.long_passes, args.seed)
    auto = not args.no_auto
    if auto:
        reuse_single_shot_scores()
        began = time.perf_counter()
        prune(model, long, sparsities, dataset=dataset, method="auto")
        record["auto_cut_seconds"] = time.perf_counter() - began
        print(f"auto cut seconds (3 budgets, Taylor included): "
              f"{record['auto_cut_seconds']:.1f}", flush=True)
    record["converged"] = {"samples": long.count, **test_metrics(model, long, dataset,
                                                                 sparsities, auto)}
    print(f"  {'converged':18s} {long.count:9d} samples "
          + " ".join(f"{a:.4f}" for a in record["converged"]["auc"])
          + ("  auto " + " ".join(f"{a:.4f}" for a in record["converged"]["auc_auto"])
             if auto else ""), flush=True)
    epochs = [float(e) for e in args.epochs.split(",")]
    auto_caps = None if args.auto_at is None else {
        epochs.index(float(e)) for e in args.auto_at.split(",")}
    for label in args.options.split(","):
        record["points"] += capped_curve(model, dataset, label, OPTIONS[label], caps,
                                         args.work, sparsities, args.seed, auto, auto_caps)
    (args.work / "qvc.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(record, args.work / "qvc.png")
    print(f"wrote {args.work / 'qvc.json'} and {args.work / 'qvc.png'}")


if __name__ == "__main__":
    main()
