"""Benchmark: `shaver data prepare` on a file with a 20-value list column vs the same file without it.

    .venv/bin/python bench/prepare/bench_lists.py              # 1M rows, median of 3 runs
    .venv/bin/python bench/prepare/bench_lists.py --quick      # 100k rows, 1 run

Writes two TSV files with the same rows (cached in --workdir): label, six categorical
columns (Zipf-like over 1k..1M values) and, in the first file only, a list column of 20
`|`-separated token ids (Zipf-like over 100k tokens; a list field, max_len 20, mean
pooling). Each preparation runs in a fresh process (imports not timed); prints the CPU
(model, cores, SIMD flags), then medians of wall and CPU seconds, rows/s, list values/s and
peak RSS, and the cost of the list column as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CATS = {"c1": 1_000, "c2": 10_000, "c3": 100_000, "c4": 1_000_000, "c5": 50, "c6": 300_000}
LIST_LEN, LIST_VOCAB = 20, 100_000
RUNNER = r"""
import json, resource, sys, time
from pathlib import Path
from shaver.data.prepare import prepare_dataset
import pyarrow.compute, pyarrow.csv
spec, src, out, workers = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
t0, c0 = time.perf_counter(), time.process_time()
ds = prepare_dataset(spec, src, out, quiet=True, workers=None if workers == "auto" else int(workers))
wall = time.perf_counter() - t0
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = time.process_time() - c0 + kids.ru_utime + kids.ru_stime
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
values = sum(int(ds.bag(s, b.field)[0][-1]) for s in ("train", "val", "test") for b in ds.layout.bags)
print(json.dumps({"rows": ds.num_rows("all"), "values": values, "wall": wall, "cpu": cpu,
                  "rss_mib": int(hwm.split()[1]) / 1024}))
"""


def cpu_line() -> str:
    """The CPU model, core count and its SIMD flags (from /proc/cpuinfo where readable)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.partition(":")[2].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.partition(":")[2].split())
    except OSError:
        pass
    simd = sorted(flags & {"sse4_2", "avx", "avx2", "avx512f", "avx512bw", "avx512_vnni",
                           "avx512_bf16", "amx_int8", "amx_bf16"})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"cpu: {model}, {cores} usable cores; flags: {', '.join(simd) or 'unknown'}"


def zipf_ids(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    return (rng.zipf(1.2, size) - 1) % n


def write_files(workdir: Path, rows: int, seed: int) -> tuple[Path, Path]:
    with_list = workdir / f"lists_{rows}_seed{seed}.tsv"
    plain = workdir / f"plain_{rows}_seed{seed}.tsv"
    if with_list.exists() and plain.exists():
        return with_list, plain
    rng = np.random.default_rng(seed)
    chunk = 100_000
    with open(with_list, "w") as f, open(plain, "w") as g:
        for lo in range(0, rows, chunk):
            n = min(chunk, rows - lo)
            label = (rng.random(n) < 0.25).astype(int).astype(str)
            cats = [np.char.add(name, zipf_ids(rng, size, n).astype(str))
                    for name, size in CATS.items()]
            tokens = zipf_ids(rng, LIST_VOCAB, n * LIST_LEN).astype(str).reshape(n, LIST_LEN)
            for i in range(n):
                head = "\t".join([label[i], *(c[i] for c in cats)])
                g.write(head + "\n")
                f.write(head + "\t" + "|".join(tokens[i]) + "\n")
    return with_list, plain


def spec(with_list: bool) -> dict:
    fields = [{"name": c} for c in CATS]
    if with_list:
        fields.append({"name": "tokens", "kind": "list", "max_len": LIST_LEN, "pooling": "mean"})
    return {"name": "bench-lists", "input": {"format": "tsv", "header": False,
                                             "columns": ["label", *CATS, "tokens"][:len(fields) + 1]},
            "label": {"column": "label"}, "min_count": 2, "fields": fields,
            "split": {"method": "random", "fractions": [0.8, 0.1, 0.1], "seed": 1}}


def median_of(src: Path, with_list: bool, workdir: Path, repeats: int, workers: str) -> dict:
    runs = []
    for _ in range(repeats):
        out = Path(tempfile.mkdtemp(dir=workdir)) / "out"
        try:
            proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(spec(with_list)),
                                   str(src), str(out), workers],
                                  capture_output=True, text=True, check=True)
        finally:
            shutil.rmtree(out.parent, ignore_errors=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "cpu", "rss_mib")}
    med.update(rows=runs[0]["rows"], values=runs[0]["values"], runs=len(runs))
    med["rows_per_s"] = med["rows"] / med["wall"]
    return med


def show(name: str, r: dict) -> None:
    values = f"{r['values'] / r['wall']:>11,.0f} values/s" if r["values"] else " " * 20
    print(f"{name:<34}{r['rows']:>10,} rows  wall {r['wall']:6.1f} s  cpu {r['cpu']:6.1f} s  "
          f"{r['rows_per_s']:>9,.0f} rows/s {values}  peak RSS {r['rss_mib']:5.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (median)")
    ap.add_argument("--quick", action="store_true", help="100k rows, 1 run")
    ap.add_argument("--workers", default="1", help="reader processes (default 1; 'auto': one "
                    "per CPU)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "shaver-bench")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats = 100_000, 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    with_list, plain = write_files(args.workdir, args.rows, args.seed)
    print(cpu_line())
    print(f"python {platform.python_version()}; numpy {np.__version__}; workers={args.workers}; "
          f"medians of {args.repeats} run(s); {len(CATS)} categorical columns, min_count 2")
    a = median_of(plain, False, args.workdir, args.repeats, args.workers)
    b = median_of(with_list, True, args.workdir, args.repeats, args.workers)
    show("without the list column", a)
    show(f"with a {LIST_LEN}-value list column", b)
    print(f"list column cost: {a['rows_per_s'] / b['rows_per_s']:.2f}x the wall time "
          f"({b['cpu'] / a['cpu']:.2f}x the CPU time); file {with_list.stat().st_size >> 20} MiB "
          f"vs {plain.stat().st_size >> 20} MiB")


if __name__ == "__main__":
    main()
