"""`shaver prune` end to end on a tiny run: every budget kind, the chooser's restrictions,
results tables rebuilt from every pruned directory, bad input, and the PTQ baseline."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch

from shaver.attribution.result import Attribution
from shaver.cli import main
from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.models.registry import build_model
from shaver.pruning.io import load_pruned, save_pruned
from shaver.pruning.runner import COLUMNS, collect_rows
from shaver.table.mask import masked_copy
from shaver.train.checkpoint import load_run, save_run
from test_pruning_util import (
    DIM,
    FIELD_DIMS,
    TinyModel,
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


def prune_cli(run_dir, out, *argv):
    return main(["prune", "--run", str(run_dir), "--out", str(out), "--device", "cpu", *argv])


def results(out):
    rows = json.loads((out / "results.json").read_text())
    with open(out / "results.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        table = list(reader)
    assert [r["path"] for r in table] == [r["path"] for r in rows]
    assert [r["kept"] for r in table] == [str(r["kept"]) for r in rows]
    return rows


def by_budget(rows):
    return {r["budget"]: r for r in rows}


def test_prune_writes_dirs_and_tables(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert prune_cli(run_dir, out, "--sparsity", "0,0.5,0.9", "--params", "7",
                     "--method", "shaver") == 0
    printed = capsys.readouterr().out
    assert "sparsity=0.5" in printed and "params=7" in printed and "AUC" in printed
    assert "winner" not in printed  # the paper's cut is not chosen on validation
    rows = by_budget(results(out))
    assert set(rows) == {"sparsity=0", "sparsity=0.5", "sparsity=0.9", "params=7"}
    assert rows["params=7"]["kept"] == 7
    assert rows["params=7"]["path"].endswith("shapley-codebook-abs-fixed-params-7")
    first = load_pruned(rows["sparsity=0"]["path"], device="cpu")
    assert first.info["kept"] == N * DIM and first.info["scorer"] == "shapley"
    x = random_ids(30)
    with torch.no_grad():
        assert torch.equal(first.model(x), load_run(run_dir, device="cpu").model(x))
    for r in rows.values():
        info = load_pruned(r["path"]).info
        assert info["artifact_bytes"] == r["artifact_bytes"]
        assert info["metrics"]["auc"] == r["auc"] and info["row"]["budget"] == r["budget"]
        assert r["method"] == "shaver" and r["winner"] is None and not r["calibrated"]
        assert r["plan"] == "fp32/entry" and r["head_dtype"] == "fp32"


def test_prune_defaults_to_auto_and_names_the_winners(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert prune_cli(run_dir, out, "--sparsity", "0.5,1.0") == 0
    printed = capsys.readouterr().out
    assert "winner (on validation)" in printed
    rows = by_budget(results(out))
    assert [r["method"] for r in rows.values()] == ["auto", "auto"]
    assert rows["sparsity=1"]["kept"] == 0
    for r in rows.values():
        info = load_pruned(r["path"]).info
        assert r["path"].endswith(f"auto-{r['budget'].replace('=', '-')}")
        assert r["winner"] == info["winner"] and r["winner"] in printed
        assert r["calibrated"] and info["calibration"]["scale"] == pytest.approx(
            load_pruned(r["path"]).model.calibration[0].item(), rel=1e-6)


def test_every_budget_kind_and_the_restrictions(run_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert prune_cli(run_dir, out, "--table-bytes", "1/2,100", "--bytes", "1MiB",
                     "--sparsity", "0.5", "--params", "12") == 0
    printed = capsys.readouterr().out
    assert "table_bytes=1/2" in printed and "plan" in printed
    rows = by_budget(results(out))
    assert set(rows) == {"table_bytes=1/2", "table_bytes=100", f"bytes={2 ** 20}",
                         "sparsity=0.5", "params=12"}
    assert rows["table_bytes=1/2"]["path"].endswith("auto-table_bytes-1of2")
    limits = {"table_bytes=1/2": ("table_bytes", N * DIM * 4 // 2),
              "table_bytes=100": ("table_bytes", 100), f"bytes={2 ** 20}": ("artifact_bytes",
                                                                            2 ** 20)}
    for label, row in rows.items():
        pruned = load_pruned(row["path"], device="cpu")
        assert pruned.info["table_bytes"] == row["table_bytes"] and row["plan"]
        art = load_artifact(export_artifact(row["path"], tmp_path / "a.shaver").path)
        assert art.size == row["artifact_bytes"]  # the feature map is counted, as export adds
        assert art.table_bytes() == row["table_bytes"]
        if label in limits:
            key, limit = limits[label]
            assert row[key] <= limit
        else:
            assert row["plan"] == "fp32/entry" and row["head_dtype"] == "fp32"
    assert rows["params=12"]["kept"] == 12
    # --values / --head restrict the chooser; --tiers (+ --granularity) gives one family
    assert prune_cli(run_dir, tmp_path / "v", "--bytes", "1MiB", "--values", "int8,int4",
                     "--head", "fp16", "-q") == 0
    (row,) = results(tmp_path / "v")
    assert row["head_dtype"] == "fp16"
    tiers = load_pruned(row["path"]).info["tiers"]
    assert {t["value_dtype"] for t in tiers} <= {"int8", "int4"}
    assert prune_cli(run_dir, tmp_path / "t", "--table-bytes", "1/2", "--tiers",
                     "int8:0.5,int2:0.5", "--granularity", "row", "-q") == 0
    (row,) = results(tmp_path / "t")
    assert row["plan"] == "int8/field:0.5+int2/field:0.5/row"
    assert prune_cli(run_dir, tmp_path / "s", "--sparsity", "0.5", "--values", "fp16",
                     "-q") == 0
    (row,) = results(tmp_path / "s")
    assert row["plan"] == "fp16/entry" and row["kept"] == N * DIM // 2


def test_a_second_prune_keeps_the_first_ones_rows(run_dir, tmp_path, capsys):
    """Issue 22 item 1: results.csv/json are rebuilt from every pruned directory."""
    out = tmp_path / "out"
    assert prune_cli(run_dir, out, "--sparsity", "0.5", "-q") == 0
    first = results(out)
    assert prune_cli(run_dir, out, "--method", "shaver", "--sparsity", "0.9", "-q") == 0
    assert prune_cli(run_dir, out, "--bytes", "1MiB", "-q") == 0
    rows = results(out)
    assert len(rows) == 3 and first[0] in rows
    assert {(r["method"], r["budget"]) for r in rows} == {
        ("auto", "sparsity=0.5"), ("shaver", "sparsity=0.9"), ("auto", f"bytes={2 ** 20}")}
    # the same budget again replaces its own directory's row, and only that
    assert prune_cli(run_dir, out, "--sparsity", "0.5", "-q") == 0
    assert len(results(out)) == 3
    # a leftover hidden write, another folder, a stray file: not cuts
    (out / ".auto-sparsity-0.5.x1y2").mkdir()
    (out / ".auto-sparsity-0.5.x1y2" / "pruned.json").write_text(
        (out / "auto-sparsity-0.5" / "pruned.json").read_text())
    (out / "notes").mkdir()
    (out / "notes" / "pruned.json").write_text("{not json")
    (out / "README.txt").write_text("mine")
    assert prune_cli(run_dir, out, "--params", "3", "-q") == 0
    rows = results(out)
    assert len(rows) == 4 and [r["path"] for r in rows] == [r["path"] for r in collect_rows(out)]
    assert sorted(r["path"] for r in rows) == [r["path"] for r in rows]  # by directory
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv, message", [
    (["--method", "auto", "--scorer", "magnitude"], "--method auto chooses the scorer, "
     "placeholder, order and codebook of each cut itself; drop --scorer or use --method "
     "shaver / single"),
    (["--method", "auto", "--order", "signed"], "--method auto chooses the scorer, "
     "placeholder, order and codebook of each cut itself; drop --order or use --method "
     "shaver / single"),
    (["--order", "signed", "--codebook", "refit", "--method", "auto"], "drop --order, "
     "--codebook or use"),
    (["--method", "shaver", "--scorer", "taylor"], "--method shaver is the Shapley ranking "
     "with its own placeholder; --scorer needs --method single"),
])
def test_prune_method_conflicts(run_dir, tmp_path, capsys, argv, message):
    assert prune_cli(run_dir, tmp_path / "o", "--sparsity", "0.5", *argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_prune_other_scorers_and_options(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert prune_cli(run_dir, out, "--scorer", "magnitude", "--order", "signed",
                     "--codebook", "refit", "--bytes", "1MiB", "-q") == 0
    assert capsys.readouterr().out == ""
    (row,) = results(out)
    assert row["scorer"] == "magnitude" and row["codebook"] == "refit"
    assert row["method"] == "single" and row["order"] == "signed"
    assert row["kept"] == N * DIM  # 1 MiB holds the whole tiny table
    assert prune_cli(run_dir, out, "--scorer", "random", "--sparsity", "0.5", "--finetune",
                     "--finetune-epochs", "1", "-q") == 0
    rows = results(out)
    (row,) = [r for r in rows if r["finetuned"]]
    assert row["path"].endswith("random-zero-abs-fixed-ft-sparsity-0.5") and len(rows) == 2
    # fine-tuning any plan of a byte budget, a quantised head included
    assert prune_cli(run_dir, out, "--table-bytes", "1/2", "--head", "int8", "--finetune",
                     "--finetune-epochs", "1", "-q") == 0
    (row,) = [r for r in results(out) if r["budget"] == "table_bytes=1/2"]
    assert row["finetuned"] and row["head_dtype"] == "int8" and row["finetune_epochs"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--sparsity", "1.5"], r"sparsity must be a fraction in \[0, 1\], got 1.5"),
    (["--params", "1.0"], "a params budget is an integer count of kept entries, got '1.0'"),
    (["--bytes", "10B"], r"budget bytes=10 is below the smallest artifact this model can "
                         r"have at the allowed precisions \(\d+ bytes, head fp16/fp32/int8\)"),
    (["--table-bytes", "10B"], r"budget table_bytes=10 is below the smallest table this "
                               r"model can have at the allowed precisions \(\d+ bytes, head "
                               r"fp32\)"),
    (["--table-bytes", "a lot"], "cannot read a byte size from 'a lot'"),
    (["--table-bytes", "1/0"], "table budget '1/0': 1/0 is not a fraction"),
    (["--sparsity", "0.5,2"], r"got 2.0"),  # the whole list is checked before any work
    ([], "give at least one budget: --sparsity, --params, --bytes or --table-bytes"),
    (["--sparsity", "0.5", "--attribution", "missing.safetensors"], "attribution file not "
                                                                    "found"),
    (["--table-bytes", "1/2", "--tiers", "int3"], "unknown value dtype 'int3': expected one "
                                                  "of fp32, fp16, int8, int4, int2"),
    (["--bytes", "1MiB", "--granularity", "row"], "--granularity applies to the family given "
                                                  "by --tiers; add --tiers"),
    (["--bytes", "1MiB", "--values", "int3"], r"--values 'int3': expected some of fp32, "
                                              r"fp16, int8, int4, int2"),
    (["--bytes", "1MiB", "--head", "int4"], "--head 'int4': expected some of fp32, fp16, int8"),
    (["--bytes", "1MiB", "--head", ","], "--head ',': expected some of"),
    (["--sparsity", "0.5", "--tiers", "int8", "--granularity", "row"],
     r"budget sparsity=0.5 counts kept entries, and the plan families allowed "
     r"\(int8/field/row\) keep whole rows"),
])
def test_prune_bad_input(run_dir, tmp_path, capsys, argv, message):
    assert prune_cli(run_dir, tmp_path / "o", *argv) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_prune_rejects_an_attribution_of_another_model(run_dir, tmp_path, capsys):
    other = Attribution.load(run_dir / "attribution-codebook.safetensors")
    other.model_fingerprint = "0" * 16
    other.save(tmp_path / "other.safetensors")
    code = prune_cli(run_dir, tmp_path / "o", "--attribution",
                     str(tmp_path / "other.safetensors"), "--sparsity", "0.5")
    assert code == 2 and "computed for model 0000000000000000" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        main(["prune", "--run", str(run_dir), "--scorer", "l1", "--sparsity", "0.5"])


def test_real_attribution_prune_export_chain(tmp_path):
    """The stages' contracts end to end: attribute() -> shaver prune -> export_artifact."""
    from shaver.attribution.api import attribute
    from shaver.train.checkpoint import open_run_dataset

    dataset = tiny_dataset(tmp_path / "ds")
    torch.manual_seed(1)
    model = build_model("deepfm", FIELD_DIMS, embed_dim=DIM, mlp_dims=[8]).eval()
    run_dir = save_run(tmp_path / "run", model, dataset=dataset, metrics={}, seed=0,
                       train_config={})
    run = load_run(run_dir, device="cpu")
    attribute(run.model, open_run_dataset(run), max_samples=400, device="cpu",
              quiet=True).save(run_dir / "attribution-codebook.safetensors")
    assert main(["prune", "--run", str(run_dir), "--sparsity", "0.3,0.9", "--bytes", "6.5KB",
                 "--device", "cpu", "-q"]) == 0
    rows = results(run_dir / "pruned")
    assert len(rows) == 3
    for row in rows:
        exported = export_artifact(row["path"], tmp_path / "a.shaver")
        assert exported.bytes == row["artifact_bytes"] == exported.path.stat().st_size
        assert exported.info["winner"] == row["winner"]


def test_save_pruned_row_is_what_the_table_lists(tmp_path):
    # a pruned directory without a row (written by hand or an older shaver) is not listed
    model = masked_copy(TinyModel(), np.ones((N, DIM), bool), torch.zeros(3, DIM))
    info = {"dataset": {}, "model_fingerprint": "x", "budget": {"kind": "params", "value": 1},
            "scorer": "shapley", "order": "abs", "codebook": "fixed", "placeholder": "zero"}
    save_pruned(tmp_path / "a", model, info)
    save_pruned(tmp_path / "b", model, {**info, "row": {"budget": "params=1", "kept": 1}})
    assert collect_rows(tmp_path) == [{"budget": "params=1", "kept": 1,
                                       "path": str(tmp_path / "b")}]
