"""Device choice, metrics and the resumable state's own checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from shaver.errors import CheckpointError, TrainingError
from shaver.models.registry import build_model
from shaver.train.device import pick_device
from shaver.train.loop import make_optimizer
from shaver.train.metrics import auc_logloss
from shaver.train.state import Progress, load_state, save_state


def test_pick_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type == pick_device("auto").type == expected
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(TrainingError, match="unknown device 'gpu0'"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="CUDA is not available"):
            pick_device("cuda")


def test_metrics_match_scikit_learn_and_handle_degenerate_input():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = rng.random(500)
    p[:3] = [0.0, 1.0, 1e-12]
    auc, ll = auc_logloss(y, p)
    assert ll == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)))
    assert 0.4 < auc < 0.6
    assert auc_logloss(np.array([1, 0]), np.array([0.9, 0.1]))[0] == 1.0
    auc, ll = auc_logloss(np.ones(4), np.full(4, 0.5))
    assert np.isnan(auc) and ll == pytest.approx(np.log(2))
    assert all(np.isnan(v) for v in auc_logloss(np.zeros(0), np.zeros(0)))


def _state(tmp_path):
    model = build_model("fm", [3, 4], embed_dim=2, seed=0)
    opt = make_optimizer(model, 1e-2, 0.0, torch.device("cpu"))
    model(torch.tensor([[0, 3]])).sum().backward()
    opt.step()
    identity = {"model": model.config(), "dataset": "abc", "seed": 0}
    save_state(tmp_path, model, model.state_dict(), opt, Progress(epoch=1), identity)
    return model, opt, identity


def test_state_round_trip_restores_optimizer(tmp_path):
    model, opt, identity = _state(tmp_path)
    clone = build_model("fm", [3, 4], embed_dim=2, seed=1)
    clone_opt = make_optimizer(clone, 1e-2, 0.0, torch.device("cpu"))
    progress, best = load_state(tmp_path, clone, clone_opt, identity)
    assert progress.epoch == 1 and set(best) == set(model.state_dict())
    for a, b in zip(opt.state.values(), clone_opt.state.values()):
        assert all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), clone.parameters()))


def test_state_that_does_not_fit(tmp_path):
    _, _, identity = _state(tmp_path)
    other = build_model("fm", [3, 5], embed_dim=2)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_state(tmp_path, other, make_optimizer(other, 1e-2, 0, torch.device("cpu")),
                   identity)
    model = build_model("fm", [3, 4], embed_dim=2)
    partial = torch.optim.Adam([model.embedding.weight])
    with pytest.raises(CheckpointError, match="optimizer state does not fit"):
        load_state(tmp_path, model, partial, identity)
