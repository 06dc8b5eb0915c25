"""Run directories: format, fingerprints, and every way loading can fail."""

from __future__ import annotations

import json

import pytest
import torch

from shaver.errors import CheckpointError, FingerprintMismatch
from shaver.models.registry import build_model
from shaver.train.checkpoint import load_run, model_fingerprint, open_run_dataset, save_run
from train_data import make_learnable, one_thread  # noqa: F401


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_learnable(tmp_path_factory.mktemp("ckpt") / "data", rows=200)


@pytest.fixture
def run_dir(data, tmp_path):
    model = build_model("deepfm", data.field_dims, embed_dim=4, mlp_dims=[8], seed=3)
    return save_run(tmp_path / "run", model, dataset=data, metrics={"auc": float("nan")},
                    seed=3, train_config={"epochs": 1})


def test_round_trip_gives_identical_predictions(data, run_dir):
    model = build_model("deepfm", data.field_dims, embed_dim=4, mlp_dims=[8], seed=3).eval()
    run = load_run(run_dir, device="cpu")
    x = torch.from_numpy(data.arrays("test")[0]).long()
    assert torch.equal(run.model(x), model(x))
    assert run.model_fingerprint == model_fingerprint(model)
    assert run.config["metrics"] == {"auc": None}  # strict JSON: NaN is stored as null
    assert open_run_dataset(run).fingerprint == data.fingerprint


def test_fingerprint_tracks_every_tensor():
    model = build_model("fm", [3, 4], seed=0)
    before = model_fingerprint(model)
    assert len(before) == 16 and before == model_fingerprint(build_model("fm", [3, 4], seed=0))
    with torch.no_grad():
        model.linear.bias += 1e-6
    assert model_fingerprint(model) != before


def test_open_run_dataset_rejects_another_dataset(run_dir, tmp_path):
    other = make_learnable(tmp_path / "other", rows=200, field_dims=(12, 9, 7, 6))
    with pytest.raises(FingerprintMismatch, match="fingerprint"):
        open_run_dataset(load_run(run_dir), other.path)


def test_open_run_dataset_when_the_data_moved(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    config["dataset"]["path"] = "/nonexistent/data"
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no longer exists"):
        open_run_dataset(load_run(run_dir))


def _edit_config(run_dir, **changes):
    config = json.loads((run_dir / "config.json").read_text())
    config.update(changes)
    (run_dir / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").unlink(), "missing"),
    (lambda d: (d / "config.json").write_text("{"), "corrupt JSON"),
    (lambda d: _edit_config(d, format="other"), "format is 'other'"),
    (lambda d: _edit_config(d, format_version=9), "format_version 9"),
    (lambda d: _edit_config(d, model={"name": "nope"}), "bad model config"),
    (lambda d: _edit_config(d, model={"name": "fm", "field_dims": [3]}), "do not fit"),
    (lambda d: _edit_config(d, model_fingerprint="0" * 16), "fingerprint"),
    (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "corrupt safetensors"),
    (lambda d: (d / "model.safetensors").unlink(), "missing"),
])
def test_load_run_errors(run_dir, damage, message):
    damage(run_dir)
    with pytest.raises(CheckpointError, match=message):
        load_run(run_dir)


def test_load_run_lacking_entries_and_dirs(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_run(tmp_path / "nothing")
    config = json.loads((run_dir / "config.json").read_text())
    del config["dataset"]
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="lacks the 'dataset'"):
        load_run(run_dir)
