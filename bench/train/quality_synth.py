"""Do the models learn? Test AUC on synthetic Criteo data next to the hidden model's own AUC.

``shaver.data.synthetic.synth_criteo`` draws labels from a hidden model and reports that
model's AUC on the drawn labels: the best any model can do on average. This script writes
the raw file, prepares it with the ``criteo`` preset (seeded 80/10/10 split), trains each
model with each optimiser (``--optimizers``: dense Adam and lazy Adam by default) with
early stopping on validation AUC and prints test AUC / LogLoss beside the hidden AUC.
``--dataset movielens-100k`` trains on the built-in MovieLens instead (no hidden AUC there).
Usage::

    python bench/train/quality_synth.py --rows 2000000 --models deepfm,dcn-mix
    python bench/train/quality_synth.py --dataset movielens-100k --models deepfm,dcn-mix
    python bench/train/quality_synth.py --quick          # 100k rows, DeepFM only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from shaver.data.builtin import load_builtin
from shaver.data.prepare import prepare_dataset
from shaver.data.synthetic import synth_criteo
from shaver.models.registry import MODEL_NAMES, build_model
from shaver.train.loop import fit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="synthetic",
                        help="synthetic (Criteo-like, with a hidden AUC) or movielens-100k")
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows")
    parser.add_argument("--scale", type=float, default=0.01,
                        help="synth_criteo cardinality scale (1.0: Criteo's own)")
    parser.add_argument("--models", default="deepfm,dcn-mix",
                        help=f"comma-separated, from {', '.join(MODEL_NAMES)}")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--optimizers", default="adam,lazy-adam",
                        help="comma-separated: adam, lazy-adam")
    parser.add_argument("--seed", type=int, default=0, help="model, order and dropout seed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="100k rows, DeepFM only")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.models = 100_000, "deepfm"
    figures: dict = {"dataset": args.dataset, "seed": args.seed, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if args.dataset == "synthetic":
            raw = Path(tmp) / "synth.txt"
            info = synth_criteo(raw, args.rows, seed=0, scale=args.scale, quiet=True)
            data = prepare_dataset("criteo", raw, Path(tmp) / "prepared", quiet=True)
            hidden = info["hidden_auc"]
            figures.update(rows=args.rows, scale=args.scale, hidden_auc=hidden)
        else:
            data, hidden = load_builtin(args.dataset, quiet=True), None
        print(f"{data} ready in {time.perf_counter() - started:.0f} s"
              + (f"; hidden model AUC {hidden:.4f}" if hidden else ""), flush=True)
        for name in args.models.split(","):
            for optimizer in args.optimizers.split(","):
                started = time.perf_counter()
                result = fit(build_model(name, data, seed=args.seed), data,
                             epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                             batch_size=args.batch_size, patience=2, device=args.device,
                             seed=args.seed, optimizer=optimizer, quiet=True)
                test = result.test or {}
                seconds = time.perf_counter() - started
                figures["models"][f"{name} {optimizer}"] = {
                    **test, "best_epoch": result.best_epoch, "seconds": seconds,
                    "rows_per_s": [h["samples_per_s"] for h in result.history]}
                gap = f" (hidden {hidden:.4f}, gap {hidden - test['auc']:.4f})" if hidden else ""
                print(f"{name} {optimizer}: test AUC {test['auc']:.4f}{gap}, LogLoss "
                      f"{test['logloss']:.4f}, best epoch {result.best_epoch}, {seconds:.0f} s",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
