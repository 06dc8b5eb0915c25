"""Data-parallel training: 2 local processes (gloo) reach the quality of 1 process."""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shaver.data.store import open_dataset
from shaver.models.registry import build_model
from shaver.train.checkpoint import load_run, model_fingerprint
from shaver.train.loop import fit
from train_data import make_learnable, one_thread  # noqa: F401

SETTINGS = {"epochs": 4, "lr": 1e-2, "batch_size": 256, "patience": None, "quiet": True}
MODEL = {"embed_dim": 4, "mlp_dims": [16, 16]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data_dir: str, out_dir: str,
            optimizer: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = open_dataset(data_dir)
        model = build_model("deepfm", data.field_dims, seed=0, **MODEL)
        result = fit(model, data, device="cpu", out_dir=out_dir, optimizer=optimizer,
                     **SETTINGS)
        report = {"fingerprint": model_fingerprint(result.model), "test": result.test,
                  "steps": len(result.history)}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def _spawn_two(data_path: Path, tmp_path: Path, optimizer: str, attempts: int = 2) -> Path:
    """Run the 2-rank job; returns its output folder. A rank killed by a signal (a native
    crash inside gloo: under lazy Adam its sparse all-reduce aborted once with "malloc():
    unaligned tcache chunk detected" once in 8 runs on the 2-core CI machine, while the
    same job passed before and after) is retried once in a fresh folder on a fresh port; a
    second crash, an exception or a wrong result still fails the test."""
    for attempt in range(attempts):
        out = tmp_path / f"ddp{attempt}"
        try:
            mp.spawn(_worker, args=(2, _free_port(), str(data_path), str(out), optimizer),
                     nprocs=2, join=True)
            return out
        except mp.ProcessExitedException as exc:
            if not exc.signal_name or attempt == attempts - 1:
                raise
            warnings.warn(f"2-rank job: a rank died of {exc.signal_name}; retrying once",
                          stacklevel=2)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("optimizer", ["adam", "lazy-adam"])
def test_two_processes_match_one(tmp_path, optimizer):
    """Under DDP, lazy Adam's sparse embedding gradients are all-reduced as sparse tensors."""
    data = make_learnable(tmp_path / "data")
    single = fit(build_model("deepfm", data.field_dims, seed=0, **MODEL), data, device="cpu",
                 optimizer=optimizer, **SETTINGS)
    out = _spawn_two(data.path, tmp_path, optimizer)
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0]["fingerprint"] == reports[1]["fingerprint"]  # ranks stay in sync
    assert reports[0]["test"] == reports[1]["test"]  # metrics gathered over both shards
    run = load_run(out)  # written by rank 0 only, complete
    assert run.model_fingerprint == reports[0]["fingerprint"]
    assert run.config["train"]["world_size"] == 2
    ddp_auc, single_auc = reports[0]["test"]["auc"], single.test["auc"]
    assert ddp_auc > 0.8 and abs(ddp_auc - single_auc) < 0.02
    assert reports[0]["test"]["rows"] == data.num_rows("test")


if os.environ.get("SHAVER_FAST_DDP") != "1":  # two interpreters importing torch: ~20 s
    test_two_processes_match_one = pytest.mark.slow(test_two_processes_match_one)
