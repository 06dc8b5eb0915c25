"""``shaver train`` / ``shaver evaluate``: end to end, and their error messages."""

from __future__ import annotations

import argparse
import json

import pytest

from shaver.errors import DataError, FingerprintMismatch, ModelError, TrainingError
from shaver.train.cli import register
from shaver.train.options import read_config
from train_data import make_learnable, one_thread  # noqa: F401


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shaver")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_learnable(tmp_path_factory.mktemp("cli") / "data", rows=1500)


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fm"
    config = out.parent / "model.yaml"
    config.write_text("model:\n  name: fm\n  embed_dim: 4\ntrain:\n  epochs: 2\n  lr: 0.01\n"
                      "  optimizer: lazy-adam\n")
    assert run_cli(["train", "--data", str(data.path), "--config", str(config), "--out",
                    str(out), "--batch-size", "256", "--patience", "0", "--quiet"]) == 0
    return out


def test_train_then_evaluate(run_dir, data, capsys):
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["name"] == "fm" and config["model"]["embed_dim"] == 4
    assert config["train"]["epochs"] == 2 and config["train"]["batch_size"] == 256
    assert config["train"]["patience"] is None and config["train"]["optimizer"] == "lazy-adam"
    capsys.readouterr()
    assert run_cli(["evaluate", "--run", str(run_dir), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["auc"] == pytest.approx(config["metrics"]["test"]["auc"])
    assert metrics["rows"] == data.num_rows("test")
    assert run_cli(["evaluate", "--run", str(run_dir), "--split", "val", "--data",
                    str(data.path)]) == 0
    assert "on val: AUC" in capsys.readouterr().out


def test_resume_flag_and_model_flag(data, tmp_path, capsys):
    argv = ["train", "--data", str(data.path), "--model", "lr", "--out", str(tmp_path / "r"),
            "--epochs", "1", "--batch-size", "512", "--lr", "0.05", "--seed", "3"]
    assert run_cli(argv) == 0
    assert "test AUC" in capsys.readouterr().out
    assert run_cli([*argv[:-6], "--epochs", "2", "--batch-size", "512", "--lr", "0.05",
                    "--seed", "3", "--resume", "-q"]) == 0
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["metrics"]["epochs_run"] == 2 and config["model"]["name"] == "lr"


def test_optimizer_flag(data, tmp_path):
    out = tmp_path / "lazy"
    assert run_cli(["train", "--data", str(data.path), "--model", "lr", "--out", str(out),
                    "--epochs", "1", "--optimizer", "lazy-adam", "-q"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["optimizer"] == "lazy-adam"
    with pytest.raises(SystemExit):
        run_cli(["train", "--data", str(data.path), "--out", str(out), "--optimizer", "sgd"])


def test_unknown_model_lists_the_known_ones(data, tmp_path):
    with pytest.raises(ModelError, match="known models are lr, fm, deepfm, dcn-v2, dcn-mix"):
        run_cli(["train", "--data", str(data.path), "--model", "xdeepfm", "--out",
                 str(tmp_path / "r")])


def test_missing_and_corrupt_data(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        run_cli(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt JSON"):
        run_cli(["train", "--data", str(bad), "--out", str(tmp_path / "r")])


def test_evaluate_on_another_dataset(run_dir, tmp_path):
    other = make_learnable(tmp_path / "other", rows=100, field_dims=(12, 9, 7, 4))
    with pytest.raises(FingerprintMismatch, match="another feature map"):
        run_cli(["evaluate", "--run", str(run_dir), "--data", str(other.path)])


def test_help_works(capsys):
    for cmd in ("train", "evaluate"):
        with pytest.raises(SystemExit) as info:
            run_cli([cmd, "--help"])
        assert info.value.code == 0
    assert "--run" in capsys.readouterr().out


@pytest.mark.parametrize("text, error, message", [
    (None, ModelError, "not found"),
    ("model: [", ModelError, "invalid YAML"),
    ("- 1\n- 2\n", ModelError, "expected a mapping"),
    ("model: {}\nextra: 1\n", ModelError, "unknown section"),
    ("model: 3\n", ModelError, "must be mappings"),
    ("train:\n  epoch: 3\n", TrainingError, "unknown train option"),
])
def test_config_file_errors(tmp_path, text, error, message):
    path = tmp_path / "model.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(error, match=message):
        read_config(path)


def test_flat_config_is_model_options(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: dcn-mix\nrank: 8\n")
    assert read_config(path) == ({"name": "dcn-mix", "rank": 8}, {})
    path.write_text("")
    assert read_config(path) == ({}, {})
