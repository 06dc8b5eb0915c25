"""Where the variance of one walk's credits comes from, and what each option removes.

For S samples of a trained run (seeded draw from train), W independent permutations each
(and their reverses), with the codebook placeholder, this prints summed over the m*d
positions of a sample:

  * the variance of one walk's credits across samples and permutations (what the plain
    estimator's standard error counts), and its within-sample part (permutation noise:
    the variance of a walk around the sample's own Shapley values);
  * the same for an antithetic pair (a permutation and its reverse, averaged);
  * the residual after the control variate (credits minus the path-integrated-gradient
    surrogate) for ``--points`` quadrature points, split into permutation noise and the
    sample-level surrogate error (sample's Shapley values minus its surrogate).

Per-walk variances at equal cost: divide a pair's figures by 2 walks. The split tells what
is left to win: the surrogate's error needs a better surrogate, the permutation noise
better permutations or more walks. Deterministic (seeded), no timings::

    .venv/bin/python bench/attribution/variance_decomposition.py --run runs/bench-conv-ml/deepfm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from shaver.attribution.codebook import field_codebook
from shaver.attribution.estimator.common import entry_credits
from shaver.attribution.estimator.factory import make_engine
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.surrogate import path_credits
from shaver.train.checkpoint import load_run, open_run_dataset


def walk_credits(engine, x: torch.Tensor, y: torch.Tensor, walks: int, players: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain (W, S, P), antithetic pair means (W, S, P)), float64, entry order."""
    plain, pairs = [], []
    for _ in range(walks):
        perm = torch.stack([torch.randperm(players, generator=generator)
                            for _ in range(len(y))])
        forward = entry_credits(engine.losses(x, y, perm), perm).double()
        backward = entry_credits(engine.losses(x, y, perm.flip(1)), perm.flip(1)).double()
        plain.append(forward)
        pairs.append(0.5 * (forward + backward))
    return torch.stack(plain), torch.stack(pairs)


def decompose(credits: torch.Tensor, surrogate: torch.Tensor | None = None) -> dict[str, float]:
    """credits (W, S, P) -> total variance of one draw, its permutation part (and, with a
    surrogate (S, P), the sample-level surrogate error), each summed over positions."""
    residual = credits if surrogate is None else credits - surrogate
    walks, _, players = residual.shape
    permutation = float(residual.var(0).mean(0).sum())
    out = {"total": float(residual.reshape(-1, players).var(0).sum()),
           "permutation": permutation}
    if surrogate is not None:
        between = float((credits.mean(0) - surrogate).var(0).sum())
        out["surrogate_error"] = between - permutation / walks  # unbiased for W walks
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="trained run directory")
    parser.add_argument("--samples", type=int, default=192, help="samples S")
    parser.add_argument("--walks", type=int, default=16, help="permutations W per sample")
    parser.add_argument("--points", default="4,16", help="quadrature points of the surrogate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = load_run(args.run, device="cpu")
    data = open_run_dataset(run)
    model = run.model.eval()
    imputer = PlaceholderImputer(model, field_codebook(model.embedding.weight, data.field_dims,
                                                       data.frequencies))
    engine = make_engine("fast", imputer)
    generator = torch.Generator().manual_seed(args.seed)
    x_all, y_all = data.arrays("train")
    rows = torch.randperm(len(y_all), generator=generator)[: args.samples].numpy()
    x = torch.from_numpy(np.asarray(x_all)[rows]).long()
    y = torch.from_numpy(np.asarray(y_all)[rows]).float()
    plain, pairs = walk_credits(engine, x, y, args.walks, imputer.num_players, generator)
    figures: dict = {"run": str(args.run), "samples": len(y), "walks": args.walks,
                     "players": imputer.num_players, "rows": {}}
    print(f"{args.run}: {len(y)} samples x {args.walks} walks, {imputer.num_players} entries "
          "a sample; variances summed over a sample's entries")
    print(f"  {'estimator':<44} {'one draw':>9} {'per walk':>9} {'permutation':>12} "
          f"{'surrogate err':>13}")
    for label, credits, cost in (("plain walk", plain, 1), ("antithetic pair", pairs, 2)):
        variants = [(label, None)] + [
            (f"{label} + control variate ({p} pts)", path_credits(imputer, x, y, int(p)))
            for p in args.points.split(",")]
        for name, surrogate in variants:
            row = decompose(credits, surrogate)
            row["per_walk"] = row["total"] * cost
            figures["rows"][name] = row
            error = f"{row['surrogate_error']:>13.4g}" if "surrogate_error" in row else ""
            print(f"  {name:<44} {row['total']:>9.4g} {row['per_walk']:>9.4g} "
                  f"{row['permutation']:>12.4g} {error}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
