"""Trainer: learning, determinism, checkpoints, resume, early stopping, NaN, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import shaver.train.loop as loop
from shaver.errors import CheckpointError, DataError, ModelError, TrainingError
from shaver.models.registry import build_model
from shaver.train.checkpoint import load_run, model_fingerprint
from shaver.train.evaluation import evaluate, predict_proba
from train_data import make_learnable, one_thread  # noqa: F401

SMALL_DEEPFM = {"embed_dim": 4, "mlp_dims": [16, 16]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_learnable(tmp_path_factory.mktemp("train") / "data")


def deepfm(data, seed=0):
    return build_model("deepfm", data.field_dims, seed=seed, **SMALL_DEEPFM)


def test_fit_learns_and_writes_a_loadable_run(data, tmp_path):
    result = loop.fit(deepfm(data), data, epochs=5, lr=1e-2, batch_size=256, quiet=True,
                      out_dir=tmp_path / "run")
    assert result.test["auc"] > 0.8 and result.val["auc"] > 0.8
    assert not result.model.training
    assert [h["epoch"] for h in result.history] == list(range(1, len(result.history) + 1))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["format"] == "shaver-run" and config["format_version"] == 1
    assert config["dataset"]["fingerprint"] == data.fingerprint
    assert config["model"] == result.model.config()
    assert config["metrics"]["test"]["auc"] == pytest.approx(result.test["auc"])
    run = load_run(tmp_path / "run")
    assert run.model_fingerprint == model_fingerprint(result.model) == config["model_fingerprint"]
    assert run.dataset_fingerprint == data.fingerprint and not run.model.training
    x, _ = data.arrays("test")
    assert np.array_equal(predict_proba(run.model, x), predict_proba(result.model, x))
    assert evaluate(run.model, data) == result.test


def test_same_seed_same_model_and_memmap_equals_in_memory(data):
    kwargs = {"epochs": 1, "batch_size": 256, "quiet": True, "patience": None}
    a = loop.fit(deepfm(data), data, **kwargs).model
    b = loop.fit(deepfm(data), data, in_memory=False, **kwargs).model
    c = loop.fit(deepfm(data), data, seed=1, **kwargs).model
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(c)


@pytest.mark.parametrize("optimizer", ["adam", "lazy-adam"])
def test_resume_continues_where_it_stopped(data, tmp_path, optimizer):
    kwargs = {"batch_size": 256, "quiet": True, "patience": None, "lr_decay": 0.5,
              "optimizer": optimizer}
    straight = loop.fit(deepfm(data), data, epochs=3, out_dir=tmp_path / "a", **kwargs)
    loop.fit(deepfm(data), data, epochs=2, out_dir=tmp_path / "b", **kwargs)
    resumed = loop.fit(deepfm(data), data, epochs=3, out_dir=tmp_path / "b", resume=True,
                       **kwargs)
    assert model_fingerprint(resumed.model) == model_fingerprint(straight.model)
    assert [h["train_loss"] for h in resumed.history] == \
        [h["train_loss"] for h in straight.history]
    assert load_run(tmp_path / "b").model_fingerprint == model_fingerprint(straight.model)


def test_early_stopping_and_lr_decay(data, monkeypatch):
    calls = iter([True] + [False] * 10)
    monkeypatch.setattr(loop, "_improved", lambda progress, val: next(calls))
    result = loop.fit(build_model("lr", data.field_dims), data, epochs=10, lr=0.01,
                      patience=2, lr_decay=0.1, batch_size=512, quiet=True)
    assert result.stopped_early and result.best_epoch == 1
    assert [h["lr"] for h in result.history] == pytest.approx([0.01, 0.01, 0.001])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    real = loop.F.binary_cross_entropy_with_logits
    steps_per_epoch = -(-data.num_rows("train") // 512)
    count = {"n": 0}

    def poisoned(logits, y):
        count["n"] += 1
        loss = real(logits, y)
        return loss * float("nan") if count["n"] > steps_per_epoch + 1 else loss

    monkeypatch.setattr(loop.F, "binary_cross_entropy_with_logits", poisoned)
    model = deepfm(data)
    with pytest.raises(TrainingError, match="loss became nan at epoch 2, by batch"):
        loop.fit(model, data, epochs=3, batch_size=512, quiet=True, out_dir=tmp_path / "r")
    run = load_run(tmp_path / "r")
    assert run.config["metrics"]["best_epoch"] == 1
    assert all(torch.isfinite(p).all() for p in run.model.state_dict().values())


@pytest.mark.parametrize("option, value, expected", [
    ("epochs", 0, "an integer >= 1"), ("epochs", "x", "an integer >= 1"),
    ("lr", 0.0, "a number > 0"), ("lr", float("inf"), "a number > 0"),
    ("weight_decay", -1.0, "a number >= 0"), ("batch_size", 1, "an integer >= 2"),
    ("patience", 0, "an integer >= 1 (or null)"), ("lr_decay", 1.5, "a number in (0, 1) (or null)"),
    ("seed", -1, "an integer >= 0"), ("optimizer", "sgd", "one of adam, lazy-adam")])
def test_bad_settings(data, option, value, expected):
    with pytest.raises(TrainingError) as err:
        loop.fit(deepfm(data), data, quiet=True, **{option: value})
    assert str(err.value) == f"{option}: expected {expected}, got {value!r}"


def test_model_for_another_feature_map(data):
    with pytest.raises(ModelError, match="4 fields"):
        loop.fit(build_model("fm", [3, 4]), data, quiet=True)


def test_run_directory_guards(data, tmp_path):
    loop.fit(build_model("lr", data.field_dims), data, epochs=1, quiet=True, out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="already holds a run"):
        loop.fit(build_model("lr", data.field_dims), data, epochs=1, quiet=True, out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="needs out_dir"):
        loop.fit(build_model("lr", data.field_dims), data, resume=True, quiet=True)
    with pytest.raises(CheckpointError, match="no training state"):
        loop.fit(build_model("lr", data.field_dims), data, resume=True, quiet=True,
                 out_dir=tmp_path / "empty")
    with pytest.raises(CheckpointError, match="different seed"):
        loop.fit(build_model("lr", data.field_dims), data, epochs=2, seed=5, resume=True,
                 quiet=True, out_dir=tmp_path)
    state = tmp_path / "checkpoint" / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt training state"):
        loop.fit(build_model("lr", data.field_dims), data, epochs=2, resume=True, quiet=True,
                 out_dir=tmp_path)


def test_too_few_rows_and_empty_split(tmp_path):
    tiny = make_learnable(tmp_path / "tiny", rows=2)
    with pytest.raises(DataError, match="too few to train"):
        loop.fit(build_model("lr", tiny.field_dims), tiny, quiet=True)
    with pytest.raises(DataError, match="has no rows"):
        evaluate(build_model("lr", tiny.field_dims), make_learnable(tmp_path / "t2", rows=5),
                 "val")


def test_predict_proba_checks_its_input(data):
    model = build_model("lr", data.field_dims)
    assert predict_proba(model, np.zeros((0, 4), np.int64)).shape == (0,)
    with pytest.raises(DataError, match="expected \\(rows, 4\\)"):
        predict_proba(model, np.zeros((3, 2), np.int64))
    with pytest.raises(DataError, match="integer"):
        predict_proba(model, np.zeros((3, 4)))
