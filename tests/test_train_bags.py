"""Training models with bags: Adam and lazy Adam learn them, pads never reach the table's
gradient, and two processes (gloo) match one."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bag_data import make_bags
from shaver.attribution.api import attribute
from shaver.data.store import open_dataset
from shaver.errors import ModelError
from shaver.models.registry import build_model
from shaver.train.checkpoint import load_run, model_fingerprint
from shaver.train.loop import evaluate, fit, predict_proba
from shaver.train.metrics import auc_logloss
from shaver.train.optim import sparse_embeddings
from train_data import one_thread  # noqa: F401

SETTINGS = {"epochs": 4, "lr": 1e-2, "batch_size": 256, "patience": None, "quiet": True}
MODEL = {"embed_dim": 4, "mlp_dims": [16, 16]}


def _model(data, seed=0):
    return build_model("deepfm", data, seed=seed, **MODEL)


def test_adam_and_lazy_adam_learn_bags(tmp_path):
    data = make_bags(tmp_path / "data")
    for optimizer in ("adam", "lazy-adam"):
        result = fit(_model(data), data, device="cpu", optimizer=optimizer, **SETTINGS)
        assert result.test["auc"] > 0.78, (optimizer, result.test)
    # the same numbers come from predict_proba on the slots and weights
    x, y = data.arrays("test")
    p = predict_proba(result.model, x, data.weights("test"))
    auc, _ = auc_logloss(y, p)
    assert abs(auc - result.test["auc"]) < 1e-9
    run = load_run(fit(_model(data), data, device="cpu", out_dir=tmp_path / "run",
                       **{**SETTINGS, "epochs": 1}).run_dir)
    assert run.model.layout == data.layout  # a saved run rebuilds its bags


def test_pads_never_reach_the_gradient(tmp_path):
    """Only ids a batch holds get a (sparse) gradient row: a pad reads no row, so lazy Adam
    updates exactly the rows the batch looked up."""
    data = make_bags(tmp_path / "data", rows=400)
    model = _model(data).train()
    x, _ = data.arrays("train")
    w = data.weights("train")
    x, w = torch.from_numpy(x[:64]), torch.from_numpy(w[:64])
    with sparse_embeddings(model):
        model(x, w).sum().backward()
    rows = model.embedding.weight.grad.coalesce().indices()[0]
    assert set(rows.tolist()) == set(x[x >= 0].tolist())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data_dir: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = open_dataset(data_dir)
        result = fit(_model(data), data, device="cpu", out_dir=out_dir, optimizer="lazy-adam",
                     **SETTINGS)
        report = {"fingerprint": model_fingerprint(result.model), "test": result.test}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def test_two_processes_with_bags_match_one(tmp_path):
    data = make_bags(tmp_path / "data")
    single = fit(_model(data), data, device="cpu", optimizer="lazy-adam", **SETTINGS)
    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(data.path), str(out)), nprocs=2, join=True)
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert reports[0]["fingerprint"] == reports[1]["fingerprint"]
    assert reports[0]["test"]["rows"] == data.num_rows("test")
    assert abs(reports[0]["test"]["auc"] - single.test["auc"]) < 0.02
    assert np.isfinite(reports[0]["test"]["logloss"])


def test_a_model_built_without_the_lists_is_refused(tmp_path):
    """build_model(name, dataset) pools its lists; a model built from field_dims alone has
    no list fields, and training, evaluation and attribution say so instead of failing on a
    pad."""
    data = make_bags(tmp_path / "data", rows=400)
    assert build_model("deepfm", data, **MODEL).layout == data.layout
    plain = build_model("deepfm", data.field_dims, **MODEL)
    message = "the model's list fields \\(no bags\\) are not .*build_model\\(name, dataset\\)"
    with pytest.raises(ModelError, match=message):
        fit(plain, data, device="cpu", **{**SETTINGS, "epochs": 1})
    with pytest.raises(ModelError, match=message):
        evaluate(plain, data)
    with pytest.raises(ModelError, match=message):
        attribute(plain, data, max_samples=10, quiet=True)
