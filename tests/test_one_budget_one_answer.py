"""One budget, one answer (issue 21): the same budget through every door gives the same
artifact, byte for byte.

Doors so far: ``shaver prune`` (a pruned directory, then ``shaver export``) and the Python
API (:func:`shaver.pruning.api.prune` + :func:`shaver.deploy.artifact.export_artifact`).
``shaver fleet`` (one class) and ``shaver bench`` join this file as further doors.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from shaver.attribution.result import Attribution
from shaver.cli import main
from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.pruning.api import prune
from shaver.table.budget import Budget
from shaver.train.checkpoint import load_run, open_run_dataset
from test_pruning_util import saved_run_with_random_phi

#: One budget of each kind, as the CLI flag and as the API reads it. The byte budget sits
#: between the smallest and the dense artifact, so the chooser has to cut.
BUDGETS = [
    ("--sparsity", "0.5", Budget.sparsity(0.5)),
    ("--params", "12", Budget.params(12)),
    ("--bytes", "6600B", Budget.bytes_(6600)),
    ("--table-bytes", "1/2", Budget.table_bytes("1/2")),
    ("--table-bytes", "100", Budget.table_bytes(100)),
]
def cases():
    for flag, text, budget in BUDGETS:
        for method in ("auto", "shaver"):
            yield pytest.param(flag, text, budget, method, id=f"{budget.label}-{method}")


@pytest.fixture(autouse=True)
def prune_and_deploy_cli(monkeypatch):
    monkeypatch.setattr("shaver.cli.STAGE_CLIS", ("shaver.pruning.cli", "shaver.deploy.cli"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return saved_run_with_random_phi(tmp_path_factory.mktemp("one"))


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("flag, text, budget, method", list(cases()))
def test_cli_and_api_write_the_same_artifact(run_dir, tmp_path, capsys, flag, text, budget,
                                             method):
    # door 1: shaver prune -> pruned directory -> shaver export
    out = tmp_path / "pruned"
    assert main(["prune", "--run", str(run_dir), "--out", str(out), flag, text,
                 "--method", method, "--device", "cpu", "-q"]) == 0
    (row,) = json.loads((out / "results.json").read_text())
    assert row["budget"] == budget.label
    cli_file = tmp_path / "cli.shaver"
    assert main(["export", "--pruned", row["path"], "--out", str(cli_file)]) == 0
    capsys.readouterr()
    # door 2: the Python API
    run = load_run(run_dir, device="cpu")
    attribution = Attribution.load(run_dir / "attribution-codebook.safetensors")
    (result,) = prune(run.model, attribution, [budget], method=method,
                      dataset=open_run_dataset(run), device="cpu")
    api_file = export_artifact(result, tmp_path / "api.shaver").path
    assert result.row()["winner"] == row["winner"] and result.kept == row["kept"]
    assert sha256(cli_file) == sha256(api_file)
    assert cli_file.stat().st_size == row["artifact_bytes"] == result.artifact_bytes
    art = load_artifact(api_file)
    assert art.table_bytes() == row["table_bytes"] and art.head_dtype == row["head_dtype"]
    assert art.info["budget"] == budget.to_json()
    if budget.is_bytes:
        limit = budget.byte_limit(sum(art.field_dims) * art.dim * 4)
        assert row["artifact_bytes" if budget.kind == "bytes" else "table_bytes"] <= limit
    else:
        assert row["kept"] == budget.kept_entries(sum(art.field_dims) * art.dim)


def test_export_refuses_precisions_other_than_the_cuts(run_dir, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", "--run", str(run_dir), "--out", str(out), "--sparsity", "0.5",
                 "--method", "shaver", "--device", "cpu", "-q"]) == 0
    cut = out / "shapley-codebook-abs-fixed-sparsity-0.5"
    capsys.readouterr()
    assert main(["export", "--pruned", str(cut), "--dtype", "int8"]) == 2
    assert "this cut's plan stores its values as fp32, not int8" in capsys.readouterr().err
    assert main(["export", "--pruned", str(cut), "--head", "int8"]) == 2
    assert "this cut's head is stored as fp32, not int8" in capsys.readouterr().err
    assert not (cut / "model.shaver").exists()
    assert main(["export", "--pruned", str(cut), "--dtype", "fp32", "--head", "fp32"]) == 0
