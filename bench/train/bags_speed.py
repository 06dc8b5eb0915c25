"""Training throughput with a list field against the same data with the list as one token.

MovieLens-100k DeepFM (d = 16, MLP 400-400-400), one epoch of ``shaver.train.loop.fit``
(batch 2048), on ``movielens-100k`` (genres a mean-pooled list of <= 6, 2.12 ids a row) and
``movielens-100k-genre-token`` (the genre list as one token), with Adam and lazy Adam;
rows/s of the training loop (``samples_per_s`` of the epoch), median of ``--repeats`` runs,
the two datasets interleaved so that both see the same machine load. Usage::

    .venv/bin/python bench/train/bags_speed.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from shaver.attribution.estimator.hardware import cpu_summary
from shaver.data.builtin import load_builtin
from shaver.models.registry import build_model
from shaver.train.loop import fit

DATASETS = ("movielens-100k", "movielens-100k-genre-token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"cpu: {cpu_summary()}; torch threads {torch.get_num_threads()}")
    data = {name: load_builtin(name, quiet=True) for name in DATASETS}
    for optimizer in ("adam", "lazy-adam"):
        speeds: dict[str, list[float]] = {name: [] for name in DATASETS}
        for _ in range(args.repeats):
            for name, dataset in data.items():
                model = build_model("deepfm", dataset, seed=0)
                result = fit(model, dataset, epochs=1, optimizer=optimizer, quiet=True)
                speeds[name].append(result.history[0]["samples_per_s"])
        lists, token = (statistics.median(speeds[name]) for name in DATASETS)
        print(f"{optimizer}: list field {lists:,.0f} rows/s, single token {token:,.0f} rows/s, "
              f"ratio {lists / token:.2f}")


if __name__ == "__main__":
    main()
