"""Could the walks be spent on better rows? What sampling rows differently can win, measured.

Issue 15 asked for walks "where the ranking is uncertain": stratified or importance sampling
of rows, and the control variate's mean from a sample instead of a full pass. Both are
questions about variance per second that one run of this script answers for a trained run
(the first ``--samples`` rows of the seeded attribution stream: a uniform sample of D; one
walk each, fp32, codebook placeholder):

* **Importance sampling of rows.** Drawing row x with probability q(x) (weights 1 / (N q(x))
  keep phi unbiased) changes the variance of one walk's contribution to entry i from
  mean_x[c_i(x)^2] - phi_i^2 to mean_x[c_i(x)^2 / (N q(x))] - phi_i^2 (estimated here on the
  uniform sample). Printed: the variance ratio uniform / q, summed over all entries and over
  the entries near each cut (| |phi| - tau | < tau / 2), for q proportional to cheap proxies
  known before the walk (the efficiency gap |L(empty) - L(full)|, the surrogate's sum of
  |credits|), to the ORACLE sum |c(x)| (unknowable before the walk: an upper bound on any
  proxy) and to proxies restricted to the entries near the cut, each mixed with
  ``--mix`` of uniform (defensive sampling). Without and with the control variate.
* **Stratified sampling of rows** (issue 23): rows split into ``--strata`` equal-share
  strata by a key known before the walk, each stratum walked in proportion to its share
  (proportional allocation: no weights needed) or in proportion to its share times its
  spread (Neyman allocation, weights share / allocation keep phi unbiased). The variance of
  one draw's contribution is then sum_h W_h Var_h / (a_h / W_h) instead of Var (estimated
  on the uniform sample, per stratum). Keys: the frequency of the row's rarest id, the
  label, both, and the number of the row's active entries near a cut (| |phi| - tau | <
  tau / 2, phi from this sample: an optimistic pilot). Stratifying costs nothing per walk,
  so the variance ratio is the ratio of variance per second.
* **The sampled control variate** (``--control-variate sampled``): seconds per walk a and
  per surrogate row b, Var(s) / Var(c - s) = k, the best rows per walk sqrt(a k / b) and the
  variance per second of plain walks, of the sampled control variate at that ratio and at
  the default (6), relative to each other (timings: medians of ``--repeats``).

    .venv/bin/python bench/attribution/row_sampling.py --run RUN_DIR --samples 4096
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from shaver.attribution.codebook import field_codebook
from shaver.attribution.estimator.common import bce, global_entries
from shaver.attribution.estimator.factory import make_engine
from shaver.attribution.estimator.hardware import cpu_summary
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import sample_permutations
from shaver.attribution.runner import batch_credits
from shaver.attribution.sampling import SampleSource
from shaver.attribution.surrogate import DEFAULT_SURROGATE_ROWS, path_credits
from shaver.train.checkpoint import load_run, open_run_dataset


def collect(run_dir: str, samples: int, batch: int, dtype: str, repeats: int):
    run = load_run(run_dir, device="cpu")
    dataset = open_run_dataset(run, None)
    model = run.model.eval()
    source = SampleSource(dataset, "train+val", seed=0)
    weight = model.embedding.weight.detach()
    m, d = dataset.num_fields, int(weight.shape[1])
    imputer = PlaceholderImputer(model, field_codebook(weight, dataset.field_dims,
                                                       source.frequencies()))
    engine = make_engine("fast", imputer, dtype=dtype, max_rows=2048)
    parts: dict[str, list[torch.Tensor]] = {"c": [], "s": [], "e": [], "gap": [], "y": [],
                                            "rarest": []}
    freq = torch.from_numpy(source.frequencies()).double()
    walk_s, surrogate_s = [], []
    for lo in range(0, samples, batch):
        x, y = (torch.from_numpy(a) for a in source.batch(lo, min(lo + batch, samples))[:2])
        perm = sample_permutations(0, lo, len(y), m * d, "cpu")
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            credits, _ = batch_credits(engine, x, y, perm, False)
            times.append(time.perf_counter() - began)
        walk_s.append(statistics.median(times) / len(y))
        times = []
        with torch.no_grad():
            for _ in range(repeats):
                began = time.perf_counter()
                surrogate = path_credits(imputer, x, y)
                times.append(time.perf_counter() - began)
            keep = torch.ones(len(y), m * d, dtype=torch.bool)
            gap = (bce(imputer(x, ~keep), y) - bce(imputer(x, keep), y)).double()
        surrogate_s.append(statistics.median(times) / len(y))
        parts["c"].append(credits.double())
        parts["s"].append(surrogate)
        parts["e"].append(global_entries(x, d))
        parts["gap"].append(gap)
        parts["y"].append(y.double())
        parts["rarest"].append(freq[x].min(1).values)
    out = {k: torch.cat(v) for k, v in parts.items()}
    return out, weight.shape[0] * d, statistics.median(walk_s), statistics.median(surrogate_s)


def variance(values: torch.Tensor, entries: torch.Tensor, entries_total: int,
             factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per entry: (variance of one draw's contribution under q, mean); ``factor`` (N,) =
    1 / (N q(x)) relative to uniform (1 everywhere for uniform)."""
    n = values.shape[0]
    flat = entries.reshape(-1)
    second = torch.zeros(entries_total, dtype=torch.float64).index_add_(
        0, flat, (values * values * factor[:, None]).reshape(-1)) / n
    mean = torch.zeros(entries_total, dtype=torch.float64).index_add_(
        0, flat, values.reshape(-1)) / n
    return second - mean * mean, mean


def stratified(values: torch.Tensor, entries: torch.Tensor, entries_total: int,
               stratum: torch.Tensor, neyman: bool, select: torch.Tensor | None = None
               ) -> float:
    """Summed over entries (``select``: a mask of them): the variance of one draw's
    contribution when rows are drawn by ``stratum`` (B,) with proportional or Neyman
    allocation (module docstring)."""
    n = values.shape[0]
    parts = []
    for h in stratum.unique():
        rows = stratum == h
        var_h, _ = variance(values[rows], entries[rows], entries_total,
                            torch.ones(int(rows.sum()), dtype=torch.float64))
        if select is not None:
            var_h = var_h[select]
        parts.append((float(rows.sum()) / n, float(var_h.clamp_min(0).sum())))
    if not neyman:
        return sum(w * v for w, v in parts)
    spread = sum(w * v ** 0.5 for w, v in parts)
    return sum(w * w * v / (w * v ** 0.5 / spread) for w, v in parts if v > 0)


def quantile_strata(key: torch.Tensor, strata: int) -> torch.Tensor:
    """(B,) stratum index 0..strata-1 by the quantiles of ``key`` (ties share a stratum)."""
    edges = torch.quantile(key.double(), torch.linspace(0, 1, strata + 1, dtype=torch.float64)[1:-1])
    return torch.bucketize(key.double(), edges)


def print_stratified(data: dict, c: torch.Tensor, r: torch.Tensor, e: torch.Tensor,
                     total: int, phi: torch.Tensor, nears: dict, strata: int) -> None:
    var_c = float(variance(c, e, total, torch.ones(c.shape[0], dtype=torch.float64))[0].sum())
    var_r_all = variance(r, e, total, torch.ones(c.shape[0], dtype=torch.float64))[0]
    near_count = sum((mask[e].sum(1) for mask in nears.values()), torch.zeros(c.shape[0]))
    freq_s = quantile_strata(data["rarest"].log1p(), strata)
    keys = {f"rarest id's frequency ({strata} strata)": freq_s,
            "label": data["y"].long(),
            f"label x rarest frequency ({2 * strata})": data["y"].long() * strata + freq_s,
            f"entries near a cut ({strata} strata)": quantile_strata(near_count.double(), strata)}
    print("\nstratified sampling of rows: variance ratio uniform / stratified (> 1: it wins; "
          "equal to variance per second: stratifying costs nothing per walk)")
    print(f"  {'key':38s} {'alloc':>8s} {'all, plain':>11s} {'all, cv':>9s} "
          + " ".join(f"{'near ' + format(sp, 'g'):>10s}" for sp in nears))
    for name, key in keys.items():
        for neyman in (False, True):
            plain = var_c / stratified(c, e, total, key, neyman)
            cv = float(var_r_all.sum()) / stratified(r, e, total, key, neyman)
            near = [float(var_r_all[m_].sum()) / stratified(r, e, total, key, neyman, m_)
                    for m_ in nears.values()]
            print(f"  {name:38s} {'neyman' if neyman else 'prop.':>8s} {plain:11.3f} "
                  f"{cv:9.3f} " + " ".join(f"{v:10.3f}" for v in near))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="trained run directory")
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--dtype", default="fp32", help="precision of the timed walks")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mix", type=float, default=0.3, help="share of uniform in q")
    ap.add_argument("--sparsity", default="0.8,0.95,0.99")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--strata", type=int, default=4, help="strata per stratification key")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data, total, a, b = collect(args.run, args.samples, args.batch_size, args.dtype,
                                args.repeats)
    c, s, e = data["c"], data["s"], data["e"]
    r = c - s
    ones = torch.ones(c.shape[0], dtype=torch.float64)
    print(f"cpu: {cpu_summary()}, {torch.get_num_threads()} threads; {args.run}; "
          f"{c.shape[0]} rows x {c.shape[1]} players")

    var_c, phi = variance(c, e, total, ones)
    var_r, _ = variance(r, e, total, ones)
    var_s, _ = variance(s, e, total, ones)
    k = float(var_s.sum() / var_r.sum())
    best = (a / b * k) ** 0.5
    print(f"\nsampled control variate: walk {a * 1e3:.3f} ms/row ({args.dtype}), surrogate "
          f"{b * 1e3:.3f} ms/row, a/b = {a / b:.1f}; Var(c) {float(var_c.sum()):.4g}, "
          f"Var(s) {float(var_s.sum()):.4g}, Var(c-s) {float(var_r.sum()):.4g}, k = {k:.2f}")

    def per_second(rows: float | None) -> float:
        """Variance x seconds per walked row (lower is better)."""
        if rows is None:
            return float(var_c.sum()) * a
        # each walked row also needs its own surrogate; S holds `rows` rows per walked row
        return (float(var_r.sum()) + float(var_s.sum()) / rows) * (a + (rows + 1) * b)

    plain = per_second(None)
    exact = float(var_r.sum()) * (a + b)  # once the exact pass is paid (not counted)
    for label, value in ((f"best r = {best:.1f}", per_second(best)),
                         (f"default r = {DEFAULT_SURROGATE_ROWS:g}",
                          per_second(DEFAULT_SURROGATE_ROWS)),
                         ("exact mean (its pass not counted)", exact)):
        print(f"  {label:36s} variance per second {plain / value:.2f}x plain walks")

    order = phi.abs().sort(descending=True).values
    nears = {}
    for sp in (float(t) for t in args.sparsity.split(",")):
        tau = order[int(round((1 - sp) * total))]
        nears[sp] = (phi.abs() - tau).abs() < 0.5 * tau
    proxies = {"efficiency gap |L(0)-L(1)|": data["gap"].abs(),
               "surrogate sum |s|": s.abs().sum(1),
               "ORACLE sum |c|": c.abs().sum(1)}
    print(f"\nimportance sampling of rows (q = {1 - args.mix:g} proxy + {args.mix:g} uniform): "
          f"variance ratio uniform / q (> 1: q wins)")
    print(f"  {'proxy':38s} {'all, plain':>11s} {'all, cv':>9s} "
          + " ".join(f"{'near ' + format(sp, 'g'):>10s}" for sp in nears))
    for name, g in proxies.items():
        q = (1 - args.mix) * g / g.mean() + args.mix
        var_cq, _ = variance(c, e, total, 1 / q)
        var_rq, _ = variance(r, e, total, 1 / q)
        near = [float(var_r[m_].sum() / var_rq[m_].sum()) for m_ in nears.values()]
        print(f"  {name:38s} {float(var_c.sum() / var_cq.sum()):11.2f} "
              f"{float(var_r.sum() / var_rq.sum()):9.2f} "
              + " ".join(f"{v:10.2f}" for v in near))
    for sp, mask in nears.items():
        g = (c.abs() * mask[e]).sum(1)
        q = (1 - args.mix) * g / g.mean() + args.mix
        var_rq, _ = variance(r, e, total, 1 / q)
        print(f"  ORACLE |c| of the entries near {sp:g} (cv): "
              f"{float(var_r[mask].sum() / var_rq[mask].sum()):.2f}x on those entries")
    print_stratified(data, c, r, e, total, phi, nears, args.strata)


if __name__ == "__main__":
    main()
