"""`shaver prune` end to end on a tiny run, its bad-input errors, and the PTQ baseline."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from shaver.attribution.result import Attribution
from shaver.cli import main
from shaver.errors import ShaverError
from shaver.models.registry import build_model
from shaver.pruning.io import load_pruned
from shaver.pruning.quantize import (
    QuantizeConfig,
    quantize_,
    quantize_table,
    quantized_artifact_bytes,
)
from shaver.table.size import predict_artifact_bytes
from shaver.train.checkpoint import save_run
from test_pruning_util import (
    DIM,
    FIELD_DIMS,
    random_ids,
    saved_run_with_random_phi,
    tiny_dataset,
)

N = sum(FIELD_DIMS)


@pytest.fixture(autouse=True)
def only_prune_cli(monkeypatch):
    """Other stages' CLIs may still be in the works: build the parser with `prune` alone."""
    monkeypatch.setattr("shaver.cli.STAGE_CLIS", ("shaver.pruning.cli",))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return saved_run_with_random_phi(root)


def test_prune_writes_dirs_and_tables(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["prune", "--run", str(run_dir), "--sparsity", "0,0.5,0.9", "--params", "7",
                 "--method", "shaver", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "sparsity=0.5" in printed and "params=7" in printed and "AUC" in printed
    rows = json.loads((out / "results.json").read_text())
    assert [r["budget"] for r in rows] == ["sparsity=0", "sparsity=0.5", "sparsity=0.9",
                                           "params=7"]
    with open(out / "results.csv") as f:
        assert [r["kept"] for r in csv.DictReader(f)] == [str(r["kept"]) for r in rows]
    assert rows[3]["kept"] == 7
    first = load_pruned(rows[0]["path"], device="cpu")
    assert first.info["kept"] == N * DIM and first.info["scorer"] == "shapley"
    x = random_ids(30)
    from shaver.train.checkpoint import load_run

    with torch.no_grad():
        assert torch.equal(first.model(x), load_run(run_dir, device="cpu").model(x))
    for r in rows:
        info = load_pruned(r["path"]).info
        assert info["artifact_bytes"] == r["bytes"] and info["metrics"]["auc"] == r["auc"]


def test_prune_defaults_to_auto_and_names_the_winners(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", "--run", str(run_dir), "--sparsity", "0.5,1.0", "--out", str(out),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "winner (on validation)" in printed
    rows = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in rows] == ["auto", "auto"] and rows[1]["kept"] == 0
    for r in rows:
        info = load_pruned(r["path"]).info
        assert r["path"].endswith(f"auto-{r['budget'].replace('=', '-')}")
        assert r["winner"] == info["winner"] == info["auto"]["winner"] and r["winner"] in printed
    with open(out / "results.csv") as f:
        assert [r["winner"] for r in csv.DictReader(f)] == [r["winner"] for r in rows]


@pytest.mark.parametrize("argv, message", [
    (["--method", "auto", "--scorer", "magnitude"], "--method auto chooses the scorer, "
     "placeholder, order and codebook of each cut itself; drop --scorer or use --method single"),
    (["--method", "shaver", "--scorer", "taylor"], "--method shaver is the Shapley ranking; "
     "--scorer taylor needs --method single"),
])
def test_prune_method_conflicts(run_dir, tmp_path, capsys, argv, message):
    code = main(["prune", "--run", str(run_dir), "--sparsity", "0.5", *argv])
    assert code == 2 and message in capsys.readouterr().err


def test_prune_other_scorers_and_options(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", "--run", str(run_dir), "--scorer", "magnitude", "--order", "signed",
                 "--codebook", "refit", "--bytes", "1MiB", "--out", str(out), "-q"]) == 0
    assert capsys.readouterr().out == ""
    (row,) = json.loads((out / "results.json").read_text())
    assert row["scorer"] == "magnitude" and row["codebook"] == "refit"
    assert row["kept"] == N * DIM  # 1 MiB holds the whole tiny table
    assert main(["prune", "--run", str(run_dir), "--scorer", "random", "--sparsity", "0.5",
                 "--finetune", "--finetune-epochs", "1", "--out", str(out), "-q"]) == 0
    (row,) = json.loads((out / "results.json").read_text())
    assert row["finetuned"] is True and row["path"].endswith("random-zero-abs-fixed-ft-sparsity-0.5")


@pytest.mark.parametrize("argv, message", [
    (["--sparsity", "1.5"], r"\[0, 1\]"),
    (["--params", "1.0"], "integer count"),
    (["--bytes", "10B"], "minimum artifact size"),
    ([], "at least one budget"),
    (["--sparsity", "0.5", "--attribution", "missing.safetensors"], "not found"),
])
def test_prune_bad_input(run_dir, tmp_path, capsys, argv, message):
    code = main(["prune", "--run", str(run_dir), "--out", str(tmp_path / "o"), *argv])
    assert code == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_prune_rejects_an_attribution_of_another_model(run_dir, tmp_path, capsys):
    other = Attribution.load(run_dir / "attribution-codebook.safetensors")
    other.model_fingerprint = "0" * 16
    other.save(tmp_path / "other.safetensors")
    code = main(["prune", "--run", str(run_dir), "--attribution", str(tmp_path / "other.safetensors"),
                 "--sparsity", "0.5", "--out", str(tmp_path / "o")])
    assert code == 2 and "computed for model 0000000000000000" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["prune", "--run", str(run_dir), "--scorer", "l1", "--sparsity", "0.5"])


def test_ptq_quantisation_error_and_bytes():
    torch.manual_seed(0)
    model = build_model("deepfm", FIELD_DIMS, embed_dim=DIM, mlp_dims=[8]).eval()
    w = model.embedding.weight.detach().clone()
    for bits in (16, 8, 4):
        for gran in ("row", "table"):
            cfg = QuantizeConfig(bits, gran)
            q, scales, deq = quantize_table(w, cfg)
            qmax = 2 ** (bits - 1) - 1
            assert int(q.abs().max()) <= qmax
            per_entry = scales[:, None] if gran == "row" else scales
            assert torch.all((deq - w).abs() <= per_entry / 2 + 1e-6)
            nbytes = quantized_artifact_bytes(model, cfg)
            full = predict_artifact_bytes(model, np.ones((N, DIM), bool))
            assert nbytes["rest"] == full - N * DIM * 4 - len(FIELD_DIMS) * DIM * 4
            assert nbytes["values"] == -(-N * DIM * bits // 8)
            assert nbytes["scales"] == 4 * (N if gran == "row" else 1)
            assert nbytes["total"] == sum(v for k, v in nbytes.items() if k != "total")
    quantize_(model, QuantizeConfig(8, "table"))
    assert not torch.equal(model.embedding.weight, w)
    with pytest.raises(ShaverError, match="bits"):
        QuantizeConfig(3)
    with pytest.raises(ShaverError, match="granularity"):
        QuantizeConfig(8, "column")


def test_real_attribution_prune_export_chain(tmp_path):
    """The stages' contracts end to end: attribute() -> shaver prune -> export_artifact."""
    from shaver.attribution.api import attribute
    from shaver.deploy.artifact import export_artifact
    from shaver.train.checkpoint import load_run, open_run_dataset

    dataset = tiny_dataset(tmp_path / "ds")
    torch.manual_seed(1)
    model = build_model("deepfm", FIELD_DIMS, embed_dim=DIM, mlp_dims=[8]).eval()
    run_dir = save_run(tmp_path / "run", model, dataset=dataset, metrics={}, seed=0,
                       train_config={})
    run = load_run(run_dir, device="cpu")
    attribute(run.model, open_run_dataset(run), max_samples=400, device="cpu",
              quiet=True).save(run_dir / "attribution-codebook.safetensors")
    budgets = "0.3,0.9"
    assert main(["prune", "--run", str(run_dir), "--sparsity", budgets, "--device", "cpu",
                 "-q"]) == 0
    rows = json.loads((run_dir / "pruned" / "results.json").read_text())
    for row in rows:
        exported = export_artifact(row["path"], tmp_path / "a.shaver")
        assert exported.bytes == row["bytes"] == exported.path.stat().st_size
