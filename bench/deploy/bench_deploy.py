"""Deployment benchmark: artifact bytes, load time, latency and peak memory.

DeepFM on a Criteo-shaped table (39 fields, 1M rows x 16 by default; random weights, the
keep-mask drawn from magnitude order so rows keep different numbers of entries) at sparsity
0.5 / 0.8 / 0.95 / 0.99. Baselines measured in the same run: the dense fp32 table, the
authors' CSR layout (fp32 values + uint8 columns + int32 row pointers), and the dense torch
model (nn.Embedding + head) for latency and memory.

    .venv/bin/python bench/deploy/bench_deploy.py            # 1M rows, ~2-4 min
    .venv/bin/python bench/deploy/bench_deploy.py --quick    # 100k rows, fewer repeats

Latencies are medians over ``--repeats`` calls (one request = one row; batch = 256 rows),
all runtimes on ``--threads`` threads (BLAS included). Peak memory: a fresh process imports
its runtime, resets its RSS high-water mark (/proc/self/clear_refs), loads the model and
scores a batch of 256; we report VmHWM minus the RSS after imports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# BLAS threads must be fixed before numpy loads (busy-waiting BLAS threads on a shared
# machine make a 256-row matmul 30x slower).
_THREADS = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv else "1"
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402

SPARSITIES = (0.5, 0.8, 0.95, 0.99)
D = 16


def criteo_field_dims(rows: int) -> list[int]:
    """13 small numeric fields + 26 categorical fields with a long-tailed size spread."""
    numeric = [60] * 13
    weights = np.geomspace(1.0, 2000.0, 26)
    cat = np.maximum(4, np.floor(weights / weights.sum() * (rows - sum(numeric)))).astype(int)
    cat[-1] += rows - sum(numeric) - cat.sum()
    return numeric + [int(v) for v in cat]


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def magnitude_mask(weight: np.ndarray, sparsity: float) -> np.ndarray:
    flat = np.abs(weight).reshape(-1)
    keep = int(round(flat.size * (1 - sparsity)))
    mask = np.zeros(flat.size, dtype=bool)
    if keep:
        mask[np.argpartition(flat, flat.size - keep)[flat.size - keep:]] = True
    return mask.reshape(weight.shape)


def build(rows: int, seed: int):
    import torch

    from shaver.models.registry import build_model

    torch.manual_seed(seed)
    model = build_model("deepfm", criteo_field_dims(rows), embed_dim=D).eval()
    gen = torch.Generator().manual_seed(seed)
    torch.nn.init.normal_(model.linear.weight.weight, std=0.01, generator=gen)
    # Rows get different scales (a realistic long tail), so magnitude masks vary per row.
    with torch.no_grad():
        scale = torch.exp(torch.randn(model.embedding.weight.shape[0], 1, generator=gen))
        model.embedding.weight.mul_(scale)
    return model


def pruned_copy(model, mask):
    import copy

    import torch

    from shaver.table.mask import MaskedEmbedding

    weight = model.embedding.weight.detach()
    bounds = np.concatenate([[0], np.cumsum(model.field_dims)])
    codebook = torch.stack([weight[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
    pruned = copy.deepcopy(model)
    pruned.embedding = MaskedEmbedding(weight, mask, codebook, model.field_dims)
    return pruned.eval()


def _rss_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def _reset_peak() -> int:
    Path("/proc/self/clear_refs").write_text("5")
    return _rss_kib("VmRSS")


def child(kind: str, path: str, fields: int, threads: int) -> None:
    """Fresh process: RSS after imports, then peak RSS after load + one batch of 256."""
    rng = np.random.default_rng(0)
    if kind == "numpy":
        import shaver.runtime as rt
        base = _reset_peak()
        art = rt.load_artifact(path)
        x = rng.integers(art.tables.bounds[:-1], art.tables.bounds[1:], (256, fields))
        art.predict(x)
    elif kind == "onnx":
        import onnxruntime as ort
        base = _reset_peak()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        dims = json.loads(Path(path + ".json").read_text())
        b = np.concatenate([[0], np.cumsum(dims)])
        sess.run(None, {"ids": rng.integers(b[:-1], b[1:], (256, fields))})
    else:
        import torch
        from safetensors.torch import load_file

        from shaver.models.registry import build_model
        torch.set_num_threads(threads)
        base = _reset_peak()
        cfg = json.loads(Path(path + ".json").read_text())
        model = build_model(cfg).eval()
        model.load_state_dict(load_file(path))
        b = np.concatenate([[0], np.cumsum(cfg["field_dims"])])
        with torch.no_grad():
            model(torch.as_tensor(rng.integers(b[:-1], b[1:], (256, fields))))
    peak = _rss_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - base) / 1024}))


def peak_mib(kind: str, path: Path, fields: int, threads: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(fields),
                          str(threads)], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])


def latency(fn_one, fn_batch, repeats: int) -> tuple[float, float]:
    return median_seconds(fn_one, repeats) * 1e3, median_seconds(fn_batch, max(3, repeats // 10)) * 1e3


def bench_sparsity(model, sparsity: float, tmp: Path, args, dense_ms) -> dict:
    import onnxruntime as ort

    from shaver.deploy.artifact import export_artifact
    from shaver.deploy.onnx_export import export_onnx
    from shaver.runtime import load_artifact
    from shaver.table.size import predict_artifact_bytes

    n, d = model.embedding.weight.shape
    mask = magnitude_mask(model.embedding.weight.detach().numpy(), sparsity)
    pruned = pruned_copy(model, mask)
    kept = int(mask.sum())
    row = {"sparsity": sparsity, "kept": kept,
           "dense_table_bytes": n * d * 4,
           "authors_csr_bytes": kept * 4 + kept + (n + 1) * 4}
    row["predict_bytes_ms"] = median_seconds(
        lambda: predict_artifact_bytes(pruned, mask), 5) * 1e3
    for dtype in ("fp32", "fp16", "int8"):
        path = tmp / f"s{sparsity}-{dtype}.shaver"
        out = export_artifact(pruned, path, value_dtype=dtype)
        assert out.bytes == predict_artifact_bytes(pruned, mask, value_dtype=dtype) == \
            path.stat().st_size
        parts = out.breakdown
        row[f"{dtype}_file_bytes"] = out.bytes
        row[f"{dtype}_table_bytes"] = parts["values"] + parts["index"] + parts["codebook"]
        if dtype == "fp32":
            row["index_bytes_per_row"] = parts["index"] / n
            row["layouts"] = {str(k): int(v) for k, v in zip(*np.unique(
                load_artifact(path).layouts, return_counts=True))}
    path = tmp / f"s{sparsity}-fp32.shaver"
    row["load_ms"] = median_seconds(lambda: load_artifact(path), 3) * 1e3
    art = load_artifact(path)
    rng = np.random.default_rng(1)
    b = art.tables.bounds
    one = rng.integers(b[:-1], b[1:], (1, len(b) - 1))
    batch = rng.integers(b[:-1], b[1:], (256, len(b) - 1))
    row["numpy_1_ms"], row["numpy_256_ms"] = latency(
        lambda: art.predict(one), lambda: art.predict(batch), args.repeats)
    onnx_path = export_onnx(path, tmp / f"s{sparsity}.onnx")
    Path(str(onnx_path) + ".json").write_text(json.dumps(model.field_dims))
    row["onnx_file_bytes"] = onnx_path.stat().st_size
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    row["onnx_1_ms"], row["onnx_256_ms"] = latency(
        lambda: sess.run(["probability"], {"ids": one}),
        lambda: sess.run(["probability"], {"ids": batch}), args.repeats)
    row["dense_torch_1_ms"], row["dense_torch_256_ms"] = dense_ms(one, batch)
    row["numpy_peak_mib"] = peak_mib("numpy", path, len(b) - 1, args.threads)
    row["onnx_peak_mib"] = peak_mib("onnx", onnx_path, len(b) - 1, args.threads)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, fewer repeats")
    parser.add_argument("--rows", type=int, default=None, help="table rows (default 1M)")
    parser.add_argument("--repeats", type=int, default=None, help="latency repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]))
        return 0
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    args.repeats = args.repeats or (50 if args.quick else 300)
    model = build(rows, args.seed)

    def dense_ms(one, batch):
        with torch.no_grad():
            t1, t256 = torch.as_tensor(one), torch.as_tensor(batch)
            return latency(lambda: model(t1), lambda: model(t256), args.repeats)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dense_path = tmp / "dense.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dense_path))
        Path(str(dense_path) + ".json").write_text(json.dumps(model.config()))
        dense_peak = peak_mib("torch", dense_path, len(model.field_dims), args.threads)
        for sparsity in SPARSITIES:
            row = bench_sparsity(model, sparsity, tmp, args, dense_ms)
            row["dense_torch_peak_mib"] = dense_peak
            results.append(row)
            print_row(row, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


def print_row(r: dict, rows: int) -> None:
    mib = 1 / 2**20
    print(f"\n== DeepFM {rows:,} x {D}, sparsity {r['sparsity']} (kept {r['kept']:,}) ==")
    print(f"table bytes: dense fp32 {r['dense_table_bytes'] * mib:.2f} MiB | authors' CSR "
          f"{r['authors_csr_bytes'] * mib:.2f} MiB | ours fp32 {r['fp32_table_bytes'] * mib:.2f} "
          f"MiB ({r['fp32_table_bytes'] / r['authors_csr_bytes']:.2f}x CSR, "
          f"{r['fp32_table_bytes'] / r['dense_table_bytes']:.3f}x dense) | fp16 "
          f"{r['fp16_table_bytes'] * mib:.2f} | int8 {r['int8_table_bytes'] * mib:.2f} MiB")
    print(f"file bytes (head, first-order, metadata incl.): fp32 {r['fp32_file_bytes']:,} | "
          f"fp16 {r['fp16_file_bytes']:,} | int8 {r['int8_file_bytes']:,} | onnx "
          f"{r['onnx_file_bytes']:,}")
    print(f"index {r['index_bytes_per_row']:.3f} bytes/row; layouts {r['layouts']}; "
          f"predict_artifact_bytes {r['predict_bytes_ms']:.1f} ms; load {r['load_ms']:.1f} ms")
    print(f"latency ms (1 row / 256 rows): numpy {r['numpy_1_ms']:.3f} / {r['numpy_256_ms']:.2f}"
          f" | onnxruntime {r['onnx_1_ms']:.3f} / {r['onnx_256_ms']:.2f} | dense torch "
          f"{r['dense_torch_1_ms']:.3f} / {r['dense_torch_256_ms']:.2f}")
    print(f"peak memory MiB: numpy {r['numpy_peak_mib']:.1f} | onnxruntime "
          f"{r['onnx_peak_mib']:.1f} | dense torch {r['dense_torch_peak_mib']:.1f}")


if __name__ == "__main__":
    sys.exit(main())
