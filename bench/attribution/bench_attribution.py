"""Benchmark: fast engine vs the reference loop (same machine, model, samples, permutations).

Prints, for DeepFM (39 fields, d=16, MLP 400x3) and DCN-Mix (3 cross layers, 4 experts of
rank 64, MLP 400x3), random weights:
  * samples/s of the reference loop and of the fast engine, fp32 and bf16 (median of
    --repeats timings), and the speed-up;
  * achieved FLOP/s (matmul FLOPs counted by torch's FlopCounterMode) vs this machine's
    measured dense matmul FLOP/s;
  * time to reach the stopping tolerance (attribute() end to end on a synthetic dataset):
    reference, fast, fast + antithetic pairs;
  * ranking quality: Spearman of phi after k samples vs a long run, for growing k.

    .venv/bin/python bench/attribution/bench_attribution.py --quick          # ~ minutes
    .venv/bin/python bench/attribution/bench_attribution.py                  # full size
    .venv/bin/python bench/attribution/bench_attribution.py --device cuda    # on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from shaver.attribution.api import attribute
from shaver.attribution.estimator import entry_credits, make_engine
from shaver.attribution.estimator.mlp import int8_available
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import sample_permutations
from shaver.data.store import write_prepared
from shaver.models.registry import build_model

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
    for r in rows:
        ref = next((q for q in rows if q["engine"] == "reference" and q["dtype"] == r["dtype"]),
                   next(q for q in rows if q["engine"] == "reference"))
        r["speedup_vs_reference"] = r["samples_per_s"] / ref["samples_per_s"]
        r["reference_dtype"] = ref["dtype"]
    return rows


def synthetic_dataset(path: Path, rows: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    offsets = np.arange(FIELDS) * vocab
    # Zipf-like ids, as in click logs
    local = np.minimum(rng.zipf(1.3, size=(rows, FIELDS)) - 1, vocab - 1)
    ids = local + offsets
    labels = (rng.random(rows) < 0.25).astype(np.float32)
    names = [f"C{i}" for i in range(FIELDS)]
    vocabs = {f: [f"{f}_{j}" for j in range(vocab)] for f in names}
    tr = int(rows * 0.9)
    splits = {"train": (ids[:tr], labels[:tr], np.arange(tr)),
              "val": (ids[tr:], labels[tr:], np.arange(tr, rows))}
    freq = np.bincount(ids[:tr].ravel(), minlength=FIELDS * vocab)
    return write_prepared(path, field_names=names, vocabularies=vocabs, splits=splits,
                          frequencies=freq)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.double().argsort().argsort().double()
    rb = b.double().argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def convergence(device, args, workdir: Path) -> tuple[list[dict], list[dict]]:
    ds = synthetic_dataset(workdir / "ds", args.conv_rows, args.vocab)
    model = build("deepfm", ds.field_dims, device)
    common = dict(tolerance=args.tolerance, batch_size=args.batch_size, quiet=True, seed=0,
                  device=device, max_seconds=args.conv_max_seconds)
    runs = []
    for label, kw in [("reference", {"engine": "reference"}), ("fast", {}),
                      ("fast+antithetic", {"antithetic": True})]:
        t = time.perf_counter()
        res = attribute(model, ds, **common, **kw)
        runs.append({"run": label, "seconds": time.perf_counter() - t, "samples": res.count,
                     "stop_reason": res.settings["stop_reason"],
                     "ratio": res.settings["convergence_ratio"]})
    long = attribute(model, ds, tolerance=None, max_samples=args.long_samples,
                     batch_size=args.batch_size, quiet=True, seed=99, device=device)
    touched = long.phi.abs().reshape(-1) > 0
    quality = []
    for k in args.rank_samples:
        res = attribute(model, ds, tolerance=None, max_samples=k, batch_size=args.batch_size,
                        quiet=True, seed=1, device=device)
        quality.append({"samples": k, "spearman_vs_long":
                        spearman(res.phi.reshape(-1)[touched], long.phi.reshape(-1)[touched]),
                        "long_samples": args.long_samples})
    return runs, quality


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes on 2 cores)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    p.add_argument("--max-rows", type=int, default=None,
                   help="fast engine rows per pass (default 2048 on CPU, 131072 on GPU)")
    p.add_argument("--skip-convergence", action="store_true")
    p.add_argument("--dtypes", default=None,
                   help="comma list of fp32,bf16 (default both on GPU; on CPU bf16 only when "
                   "its measured matmul is at least as fast as fp32)")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    args.max_rows = args.max_rows or (131072 if gpu else 2048)
    sizes = dict(ref_samples=32, fast_samples=64, conv_rows=200, vocab=20, batch_size=64,
                 tolerance=0.05, long_samples=1000, rank_samples=[50, 200, 500],
                 conv_max_seconds=60.0) if args.quick else dict(
        ref_samples=1024 if gpu else 512, fast_samples=8192 if gpu else 512, conv_rows=2000,
        vocab=50, batch_size=1024 if gpu else 256, tolerance=0.02, long_samples=40000,
        rank_samples=[500, 2000, 8000, 20000], conv_max_seconds=1800.0)
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
    print(f"\n{'model':8} {'engine':10} {'dtype':5} {'path':8} {'samples/s':>10} "
          f"{'speedup':>8} {'GFLOP/smp':>10} {'GFLOP/s':>8} {'%fp32pk':>7} {'corr/fp32':>9}")
    for name in ("deepfm", "dcn-mix"):
        for r in engine_speed(name, device, args, dtypes):
            report["speed"].append(r)
            pct = 100 * r["achieved_gflops"] * 1e9 / peak["fp32"]
            corr = r.get("credit_corr_vs_fp32")
            shown = r["dtype"] if r["dtype_used"] == r["dtype"] else f"{r['dtype']}>{r['dtype_used']}"
            print(f"{r['model']:8} {r['engine']:10} {shown:5} {r['path']:8} "
                  f"{r['samples_per_s']:10.1f} {r['speedup_vs_reference']:7.2f}x "
                  f"{r['gflop_per_sample']:10.3f} {r['achieved_gflops']:8.1f} {pct:6.0f}% "
                  f"{'' if corr is None else f'{corr:9.4f}'}")
    print("speedup: vs the reference loop in the same dtype (int8: vs the fp32 reference); "
          "GFLOP counted as fp32-equivalent matmul FLOPs; corr/fp32: correlation of the "
          "per-sample credits with the fp32 fast engine's on the same permutations; "
          "int8>fp32: int8 disagreed with fp32 on the first batch, so the run stayed fp32")
    if not args.skip_convergence:
        with tempfile.TemporaryDirectory() as tmp:
            runs, quality = convergence(device, args, Path(tmp))
        report["convergence"], report["ranking"] = runs, quality
        base = runs[0]["seconds"]
        print(f"\ntime to tolerance {args.tolerance} (DeepFM, synthetic {args.conv_rows} rows, "
              f"batch {args.batch_size}):")
        bound = "" if runs[0]["stop_reason"] == "converged" else ">="
        for r in runs:
            print(f"  {r['run']:16} {r['seconds']:8.1f}s  {r['samples']:7d} samples  "
                  f"{r['stop_reason']:11} ratio {r['ratio']:.4f}  x{bound}{base / r['seconds']:.2f}")
        if bound:
            print("  (the reference hit the time cap before converging: ratios are lower bounds)")
        print("ranking vs a long run (Spearman of phi over touched entries):")
        for q in quality:
            print(f"  {q['samples']:7d} samples: {q['spearman_vs_long']:.4f} "
                  f"(long run: {q['long_samples']} samples)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
