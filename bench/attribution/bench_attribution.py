"""Benchmark: fast engine vs the reference loop (same machine, model, samples, permutations).

Prints, for DeepFM (39 fields, d=16, MLP 400x3) and DCN-Mix (3 cross layers, 4 experts of
rank 64, MLP 400x3), random weights:
  * samples/s of the reference loop and of the fast engine, fp32 and bf16 (median of
    --repeats timings), and the speed-up;
  * achieved FLOP/s (matmul FLOPs counted by torch's FlopCounterMode) vs this machine's
    measured dense matmul FLOP/s;
  * agreement of int8 credits with fp32 on the same permutations.

Time to a converged attribution (antithetic pairs, the control variate) and what the number
of samples buys (ranking, AUC after pruning) are in ``bench_convergence.py`` (real data).

    .venv/bin/python bench/attribution/bench_attribution.py --quick          # ~ minutes
    .venv/bin/python bench/attribution/bench_attribution.py                  # full size
    .venv/bin/python bench/attribution/bench_attribution.py --device cuda    # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from shaver.attribution.estimator import entry_credits, make_engine
from shaver.attribution.estimator.mlp import int8_available
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import sample_permutations
from shaver.attribution.surrogate import DEFAULT_POINTS, DEFAULT_SURROGATE_ROWS, path_credits
from shaver.models.registry import build_model
from shaver.train.device import pick_device

FIELDS, DIM = 39, 16


def build(name: str, field_dims: list[int], device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "deepfm":
        model = build_model("deepfm", field_dims, embed_dim=DIM, mlp_dims=[400, 400, 400])
    else:
        model = build_model("dcn-mix", field_dims, embed_dim=DIM, cross_layers=3, num_experts=4,
                            rank=64, mlp_dims=[400, 400, 400])
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return model.to(device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warm=None) -> float:
    (warm or fn)()  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    secs = timed(lambda: a @ b, device, 5)
    return 2 * size**3 / secs


def flops_of(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def engine_speed(name, device, args, dtypes: list[str]) -> list[dict]:
    dims = [1000] * FIELDS
    model = build(name, dims, device)
    offsets = torch.arange(FIELDS, device=device) * 1000
    rows = []
    imputer = PlaceholderImputer(model, torch.zeros(FIELDS, DIM))
    players = FIELDS * DIM
    combos = [(e, t) for t in dtypes for e in (("fast",) if t == "int8" else ("reference", "fast"))]
    fp32_credits = None
    for engine, dtype in combos:
        n = args.ref_samples if engine == "reference" else args.fast_samples
        gen = torch.Generator().manual_seed(1)
        x = (torch.randint(0, 1000, (n, FIELDS), generator=gen).to(device) + offsets)
        y = (torch.rand(n, generator=gen) < 0.25).float().to(device)
        perm = sample_permutations(0, 0, n, players, device)
        eng = make_engine(engine, imputer, dtype=dtype, max_rows=args.max_rows)
        secs = timed(lambda eng=eng, x=x, y=y, perm=perm: eng.losses(x, y, perm), device,
                     args.repeats, warm=lambda e=eng, a=x[:2], b=y[:2], p=perm[:2]: e.losses(a, b, p))
        k = min(n, 8)
        flops = flops_of(lambda e=eng, a=x[:k], b=y[:k], p=perm[:k]: e.losses(a, b, p)) / k
        if dtype == "int8":  # quantized ops are not counted: the fp32 path's FLOPs, same work
            flops = next((r["gflop_per_sample"] * 1e9 for r in rows
                          if r["engine"] == "fast" and r["dtype"] == "fp32"), flops)
        print(f"  .. {name} {engine} {dtype}: {n / secs:.1f} samples/s", flush=True)
        row = {"model": name, "engine": engine, "dtype": dtype,
               "path": getattr(eng, "path_name", engine), "samples": n,
               "samples_per_s": n / secs, "gflop_per_sample": flops / 1e9,
               "achieved_gflops": flops * n / secs / 1e9,
               "dtype_used": getattr(eng, "dtype_used", dtype)}
        if engine == "fast":  # agreement of the credits with fp32 on the same permutations
            credits = entry_credits(eng.losses(x, y, perm), perm)
            if dtype == "fp32":
                fp32_credits = credits
            elif fp32_credits is not None:
                row["credit_corr_vs_fp32"] = float(torch.corrcoef(torch.stack(
                    [credits.flatten().double(), fp32_credits.flatten().double()]))[0, 1])
        rows.append(row)
    # the control variate's surrogate (one quadrature point, the default) on the same rows:
    # how many surrogate rows one walk costs sets the sampled control variate's best ratio
    with torch.no_grad():
        surrogate_s = timed(lambda: path_credits(imputer, x, y, DEFAULT_POINTS), device,
                            args.repeats, warm=lambda: path_credits(imputer, x[:2], y[:2]))
    for r in rows:
        if r["engine"] == "fast":
            r["surrogate_rows_per_s"] = n / surrogate_s
            r["walk_in_surrogate_rows"] = r["surrogate_rows_per_s"] / r["samples_per_s"]
    for r in rows:
        ref = next((q for q in rows if q["engine"] == "reference" and q["dtype"] == r["dtype"]),
                   next(q for q in rows if q["engine"] == "reference"))
        r["speedup_vs_reference"] = r["samples_per_s"] / ref["samples_per_s"]
        r["reference_dtype"] = ref["dtype"]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes on 2 cores)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    p.add_argument("--max-rows", type=int, default=None,
                   help="fast engine rows per pass (default 2048 on CPU, 131072 on GPU)")
    p.add_argument("--dtypes", default=None,
                   help="comma list of fp32,bf16,int8 (default: fp32; bf16 on GPUs and on CPUs "
                   "whose measured bf16 matmul is at least as fast as fp32; int8 on CPUs)")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    args.max_rows = args.max_rows or (131072 if gpu else 2048)
    sizes = dict(ref_samples=32, fast_samples=64) if args.quick else dict(
        ref_samples=1024 if gpu else 512, fast_samples=8192 if gpu else 512)
    for k, v in sizes.items():
        setattr(args, k, v)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    peak = {"fp32": matmul_peak(device, torch.float32, 2048 if gpu or not args.quick else 1024),
            "bf16": matmul_peak(device, torch.bfloat16, 2048 if gpu or not args.quick else 1024)}
    print(f"measured dense matmul: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s")
    report = {"device": str(device), "peak_gflops": {k: v / 1e9 for k, v in peak.items()},
              "speed": []}
    if args.dtypes:
        dtypes = args.dtypes.split(",")
    else:
        dtypes = ["fp32"]
        if gpu or peak["bf16"] >= peak["fp32"]:
            dtypes.append("bf16")
        else:
            print("bf16 skipped: this CPU's bf16 matmul is slower than fp32 (no native bf16); "
                  "--dtypes fp32,bf16 forces it")
        if int8_available(device):
            dtypes.append("int8")
    print(f"reference batch {args.ref_samples} samples (one head call per step over it); "
          f"fast engine {args.fast_samples} samples, {args.max_rows} head rows per pass")
    print(f"\n{'model':8} {'engine':10} {'dtype':9} {'path':8} {'samples/s':>10} "
          f"{'speedup':>8} {'GFLOP/smp':>10} {'GFLOP/s':>8} {'%fp32pk':>7} {'corr/fp32':>9}")
    for name in ("deepfm", "dcn-mix"):
        for r in engine_speed(name, device, args, dtypes):
            report["speed"].append(r)
            pct = 100 * r["achieved_gflops"] * 1e9 / peak["fp32"]
            corr = r.get("credit_corr_vs_fp32")
            shown = r["dtype"] if r["dtype_used"] == r["dtype"] else f"{r['dtype']}>{r['dtype_used']}"
            print(f"{r['model']:8} {r['engine']:10} {shown:9} {r['path']:8} "
                  f"{r['samples_per_s']:10.1f} {r['speedup_vs_reference']:7.2f}x "
                  f"{r['gflop_per_sample']:10.3f} {r['achieved_gflops']:8.1f} {pct:6.0f}% "
                  f"{'' if corr is None else f'{corr:9.4f}'}")
    for r in report["speed"]:
        if "walk_in_surrogate_rows" in r:
            a = r["walk_in_surrogate_rows"]
            print(f"{r['model']:8} fast {r['dtype']}: one walk costs {a:.1f} surrogate rows "
                  f"(control variate, {DEFAULT_POINTS} point); the sampled control variate's "
                  f"best rows per walk ~ sqrt({a:.1f} k) = {(a * 2.3) ** 0.5:.1f} at k = 2.3 "
                  f"(MovieLens; default {DEFAULT_SURROGATE_ROWS:g})")
    print("speedup: vs the reference loop in the same dtype (int8: vs the fp32 reference); "
          "GFLOP counted as fp32-equivalent matmul FLOPs; corr/fp32: correlation of the "
          "per-sample credits with the fp32 fast engine's on the same permutations; "
          "int8>fp32: int8 disagreed with fp32 on the first batch, so the run stayed fp32")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
