"""Data-parallel training: 2 local processes (gloo) reach the quality of 1 process, and
lazy Adam's row gradients are averaged with dense collectives only."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from shaver.data.store import open_dataset
from shaver.models.registry import build_model
from shaver.train.checkpoint import load_run, model_fingerprint
from shaver.train.distributed import DistContext
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
        marks = hasattr(model, "_ddp_params_and_buffers_to_ignore") or any(
            hasattr(p, "_ddp_ignored") for p in model.parameters())
        report = {"fingerprint": model_fingerprint(result.model), "test": result.test,
                  "steps": len(result.history), "ddp_marks_left": marks}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("optimizer", ["adam", "lazy-adam"])
def test_two_processes_match_one(tmp_path, optimizer):
    """One run, no retry: a rank that dies (lazy Adam's sparse all-reduce inside gloo used to
    abort natively about once in ten runs) fails the test."""
    data = make_learnable(tmp_path / "data")
    single = fit(build_model("deepfm", data.field_dims, seed=0, **MODEL), data, device="cpu",
                 optimizer=optimizer, **SETTINGS)
    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(data.path), str(out), optimizer), nprocs=2,
             join=True)
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert not any(r["ddp_marks_left"] for r in reports)  # the model can be wrapped again
    assert reports[0]["fingerprint"] == reports[1]["fingerprint"]  # ranks stay in sync
    assert reports[0]["test"] == reports[1]["test"]  # metrics gathered over both shards
    run = load_run(out)  # written by rank 0 only, complete
    assert run.model_fingerprint == reports[0]["fingerprint"]
    assert run.config["train"]["world_size"] == 2
    ddp_auc, single_auc = reports[0]["test"]["auc"], single.test["auc"]
    assert ddp_auc > 0.8 and abs(ddp_auc - single_auc) < 0.02
    assert reports[0]["test"]["rows"] == data.num_rows("test")


#: Per rank, per table: (rows looked up, duplicates included; None: no gradient at all).
ROWS = [{"a": [1, 1, 4, 7], "b": [0, 5], "c": None},
        {"a": [4, 2, 9, 2], "b": None, "c": None}]
SHAPES = {"a": (10, 3), "b": (6, 2), "c": (5, 2)}


def _rank_grads(rank: int) -> dict[str, torch.Tensor | None]:
    """Rank ``rank``'s sparse gradients (seeded values), as an embedding backward makes them."""
    gen = torch.Generator().manual_seed(rank)
    grads = {}
    for name, rows in ROWS[rank].items():
        dim = SHAPES[name][1]
        grads[name] = None if rows is None else torch.sparse_coo_tensor(
            torch.tensor([rows]), torch.randn(len(rows), dim, generator=gen), SHAPES[name],
            check_invariants=True)
    return grads


def _row_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    sparse_inputs = []
    for name in ("all_reduce", "all_gather", "broadcast"):
        real = getattr(dist, name)

        def spy(*args, _real=real, **kwargs):
            for arg in args:
                for t in arg if isinstance(arg, list) else [arg]:
                    if isinstance(t, torch.Tensor) and t.is_sparse:
                        sparse_inputs.append(t.layout)
            return _real(*args, **kwargs)

        setattr(dist, name, spy)
    try:
        params = {name: nn.Parameter(torch.zeros(shape)) for name, shape in SHAPES.items()}
        for name, grad in _rank_grads(rank).items():
            params[name].grad = grad
        DistContext(rank=rank, world=world).average_row_grads(list(params.values()))
        result: dict = {"sparse_inputs": len(sparse_inputs)}
        for name, p in params.items():
            result[name] = None if p.grad is None else {
                "sparse": p.grad.is_sparse, "coalesced": p.grad.is_coalesced(),
                "rows": p.grad.indices()[0].tolist(), "dense": p.grad.to_dense().tolist()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def test_row_grads_are_averaged_with_dense_collectives(tmp_path):
    """Each table's gradient becomes the mean over ranks on the union of the rows they looked
    up (a table with no gradient on one rank counts as zeros there, with none anywhere it
    stays None), the same on both ranks, and no collective ever got a sparse tensor."""
    mp.spawn(_row_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1]
    result = results[0]
    assert result["sparse_inputs"] == 0
    grads = [_rank_grads(r) for r in range(2)]
    for name in ("a", "b"):
        expected = sum(g[name].to_dense() for g in grads if g[name] is not None) / 2
        touched = sorted({i for ranks in ROWS if ranks[name] for i in ranks[name]})
        assert result[name]["sparse"] and result[name]["coalesced"]
        assert result[name]["rows"] == touched
        torch.testing.assert_close(torch.tensor(result[name]["dense"]), expected)
    assert result["c"] is None


if os.environ.get("SHAVER_FAST_DDP") != "1":  # two interpreters importing torch: ~5-20 s
    test_two_processes_match_one = pytest.mark.slow(test_two_processes_match_one)
    test_row_grads_are_averaged_with_dense_collectives = pytest.mark.slow(
        test_row_grads_are_averaged_with_dense_collectives)
