"""Benchmark: attribution speed with a bag against single-valued fields only, at the SAME
number of active entries per sample.

Two DeepFM models (d = 16, MLP 400x3, random weights with non-trivial batch-norm statistics):

* ``single``: 8 single-valued fields (8 active entries per sample);
* ``bag``: 5 single-valued fields and one mean bag of max_len 6 whose samples hold 1..5
  distinct ids (3 on average): 8 active entries per sample on average, 11 slots.

Each: fast engine, dtype "auto" (the default), walks of ``--batch`` samples through
``runner.batch_credits`` (the walk visits the real players and stops after them, so the
cost should follow the active entries, not max_len), ``--repeats`` rounds after a warm-up
(which also validates the fast path and settles the precision), the two models timed in
turn in each round. Prints the CPU's features, the median samples/s of each and the median
of the rounds' ratios.

    .venv/bin/python bench/attribution/bags.py            # DeepFM
    .venv/bin/python bench/attribution/bags.py --model dcn-mix
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from shaver.attribution.estimator import make_engine
from shaver.attribution.estimator.hardware import cpu_summary
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import sample_permutations
from shaver.attribution.runner import batch_credits
from shaver.layout import PAD
from shaver.models.registry import build_model

DIM, ROWS = 16, 1000


def build(name: str, fields: int, layout=None) -> torch.nn.Module:
    torch.manual_seed(0)
    extra = {"mlp_dims": [400, 400, 400]}
    if name == "dcn-mix":
        extra.update(cross_layers=3, num_experts=4, rank=64)
    model = build_model(name, [ROWS] * fields, embed_dim=DIM, layout=layout, **extra)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return model.eval()


def single_rows(batch: int, fields: int, gen: torch.Generator) -> torch.Tensor:
    offsets = torch.arange(fields) * ROWS
    return torch.randint(0, ROWS, (batch, fields), generator=gen) + offsets


def bag_rows(batch: int, gen: torch.Generator, max_len: int = 6) -> torch.Tensor:
    """5 single fields, then a bag (field 5) of 1..5 distinct ids, padded to ``max_len``."""
    x = torch.full((batch, 5 + max_len), PAD, dtype=torch.long)
    x[:, :5] = single_rows(batch, 5, gen)
    lengths = torch.randint(1, 6, (batch,), generator=gen)
    for b in range(batch):
        ids = torch.randperm(ROWS, generator=gen)[: int(lengths[b])]
        x[b, 5:5 + len(ids)] = ids + 5 * ROWS
    return x


def prepared(model, x, seed: int = 0):
    """A warm engine (fast path validated, precision settled) and its walk's inputs."""
    imputer = PlaceholderImputer(model, torch.zeros(model.num_fields, DIM))
    engine = make_engine("fast", imputer, dtype="auto", max_rows=2048)
    y = (torch.arange(len(x)) % 2).float()
    perm = sample_permutations(seed, 0, len(x), imputer.num_players)
    batch_credits(engine, x[:16], y[:16], perm[:16], False)  # warm-up, validation, precision
    return engine, x, y, perm


def timed(engine, x, y, perm) -> float:
    start = time.perf_counter()
    batch_credits(engine, x, y, perm, False)
    return len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="deepfm", choices=["deepfm", "dcn-mix"])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(1)
    print(f"cpu: {cpu_summary()}; torch threads {torch.get_num_threads()}")
    single = build(args.model, 8)
    bag = build(args.model, 6, layout=[{"field": 5, "max_len": 6, "pooling": "mean"}])
    xs, xb = single_rows(args.batch, 8, gen), bag_rows(args.batch, gen)
    active = float((xb[:, 5:] >= 0).sum(1).float().mean())
    runs = {label: prepared(model, x) for label, model, x in (
        ("single (8 fields)", single, xs),
        (f"bag (5 + bag of {active:.2f} ids, max_len 6)", bag, xb))}
    rates = {label: [] for label in runs}
    for _ in range(args.repeats):  # interleaved, so that load drifts hit both alike
        for label, run in runs.items():
            rates[label].append(timed(*run))
    for label, run in runs.items():
        print(f"{args.model} {label}: {statistics.median(rates[label]):,.0f} samples/s "
              f"(median of {args.repeats}; path {run[0].path_name}, dtype {run[0].dtype_used})")
    ratios = [a / b for a, b in zip(*rates.values())]
    print(f"ratio single / bag: {statistics.median(ratios):.2f}x median of the rounds' ratios "
          f"({', '.join(f'{r:.2f}' for r in ratios)}; target <= 1.5x)")

if __name__ == "__main__":
    main()
