"""Soak run of two-rank training: the same seeded 2-process job, N times, failures counted.

Each run is ``torchrun --standalone --nproc-per-node 2 -m shaver -- train ...`` on CPU
(gloo), the job of ``tests/test_train_ddp.py``: DeepFM (d=4, MLP 16-16) on a small
learnable dataset (4 fields, 33 embedding rows, 3,200 training rows), 4 epochs of global
batch 256, lr 0.01, no early stopping. A run fails when torchrun exits non-zero (a rank
raised, or died of a signal, as a native abort does) or leaves no complete run directory.
Every run has the same seed and data, so every completed run should write the same model:
the distinct model fingerprints are counted too. Usage::

    python bench/train/ddp_soak.py --runs 50                       # lazy Adam (default)
    python bench/train/ddp_soak.py --runs 10 --optimizer adam
    python bench/train/ddp_soak.py --quick                         # 2 runs
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shaver.data.store import PreparedDataset, write_prepared
from shaver.train.checkpoint import read_run_config

FIELD_DIMS = (12, 9, 7, 5)
MODEL_YAML = "model:\n  name: deepfm\n  embed_dim: 4\n  mlp_dims: [16, 16]\n"
TRAIN_FLAGS = ["--epochs", "4", "--lr", "0.01", "--batch-size", "256", "--patience", "0",
               "--device", "cpu", "--quiet"]


def learnable(out: Path, rows: int, seed: int = 0) -> PreparedDataset:
    """Labels from a hidden first-order + one-interaction logistic model (AUC ~ 0.9); an
    80/10/10 split (the data of ``tests/train_data.make_learnable``)."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(FIELD_DIMS)[:-1]])
    local = np.stack([rng.integers(0, d, rows) for d in FIELD_DIMS], axis=1)
    ids = local + offsets
    weights = rng.normal(0, 1.5, sum(FIELD_DIMS))
    inter = rng.normal(0, 1.5, (FIELD_DIMS[0], FIELD_DIMS[1]))
    logit = weights[ids].sum(1) + inter[local[:, 0], local[:, 1]]
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cut1, cut2 = int(rows * 0.8), int(rows * 0.9)
    row_no = np.arange(rows, dtype=np.int64)
    splits = {"train": (ids[:cut1], labels[:cut1], row_no[:cut1]),
              "val": (ids[cut1:cut2], labels[cut1:cut2], row_no[cut1:cut2]),
              "test": (ids[cut2:], labels[cut2:], row_no[cut2:])}
    names = [f"f{i}" for i in range(len(FIELD_DIMS))]
    vocab = {n: [f"{n}_{j}" for j in range(d)] for n, d in zip(names, FIELD_DIMS)}
    freq = np.bincount(ids[:cut1].reshape(-1), minlength=sum(FIELD_DIMS))
    return write_prepared(out, field_names=names, vocabularies=vocab, splits=splits,
                          frequencies=freq)


def why_failed(returncode: int, stderr: str) -> str:
    """One line: the signal that killed a rank (torchrun reports ``exitcode : -N``), the
    libc abort message if any, else the last line of stderr."""
    died = re.search(r"exitcode\s*:\s*-(\d+)", stderr)
    libc = re.search(r"^(malloc|free|double free|corrupted)[^\n]*", stderr, re.MULTILINE)
    if died:
        name = signal.Signals(int(died.group(1))).name
        return f"a rank died of {name}" + (f" ({libc.group(0).strip()})" if libc else "")
    tail = stderr.strip().splitlines()[-1:] or ["(no stderr)"]
    return f"exit status {returncode}: {tail[0][:200]}"


def one_run(data: Path, config: Path, out: Path, optimizer: str, timeout: float,
            logs: Path | None) -> tuple[str | None, str]:
    """(model fingerprint or None, failure reason or "") of one two-rank job; a failed
    job's stderr is written to ``logs/<run>.stderr`` when ``logs`` is given."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "shaver", "--", "train", "--data", str(data), "--config", str(config),
           "--out", str(out), "--optimizer", optimizer, *TRAIN_FLAGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    if proc.returncode != 0:
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            (logs / f"{out.name}.stderr").write_text(proc.stderr)
        return None, why_failed(proc.returncode, proc.stderr)
    if not (out / "model.safetensors").is_file():
        return None, "exit status 0 but no model.safetensors"
    return read_run_config(out)["model_fingerprint"], ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="two-rank jobs to run (default 50)")
    ap.add_argument("--optimizer", choices=["adam", "lazy-adam"], default="lazy-adam")
    ap.add_argument("--rows", type=int, default=4000, help="dataset rows (default 4000)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per run (default 300)")
    ap.add_argument("--logs", type=Path, help="folder for the stderr of failed runs")
    ap.add_argument("--quick", action="store_true", help="2 runs (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.runs = 2
    if args.runs < 1 or args.rows < 100:
        ap.error("--runs must be >= 1 and --rows >= 100")
    print(f"torch {__import__('torch').__version__}, {args.runs} runs of 2 ranks (gloo, CPU), "
          f"optimizer {args.optimizer}", flush=True)
    fingerprints: dict[str, int] = {}
    failures, seconds = [], []
    with tempfile.TemporaryDirectory(prefix="ddp-soak-") as tmp:
        data = learnable(Path(tmp, "data"), args.rows).path
        config = Path(tmp, "model.yaml")
        config.write_text(MODEL_YAML)
        for i in range(1, args.runs + 1):
            start = time.perf_counter()
            fp, reason = one_run(data, config, Path(tmp, f"run{i}"), args.optimizer,
                                 args.timeout, args.logs)
            seconds.append(time.perf_counter() - start)
            if fp is None:
                failures.append((i, reason))
            else:
                fingerprints[fp] = fingerprints.get(fp, 0) + 1
            status = f"ok, model {fp[:12]}" if fp else f"FAILED: {reason}"
            print(f"run {i}/{args.runs}: {status} ({seconds[-1]:.1f} s)", flush=True)
    killed = sum("died of" in reason for _, reason in failures)
    print(f"{args.runs} runs, {len(failures)} failed ({killed} killed by a signal), "
          f"{len(fingerprints)} distinct model(s) among the completed runs, "
          f"median {statistics.median(seconds):.1f} s a run")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
