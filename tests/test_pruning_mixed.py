"""Mixed precision by attribution and the byte-budget search (plan_for_bytes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.errors import BudgetError
from shaver.models.registry import build_model
from shaver.pruning.bytes_search import plan_for_bytes, resolve_table_budget
from shaver.runtime.tiered import TierSpec
from shaver.table.families import Shape, TierPlanner, default_shapes, parse_tiers
from test_pruning_util import DIM, tiny_dataset

FIELDS = [7, 30, 5]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    dataset = tiny_dataset(root / "ds", rows=400, field_dims=FIELDS)
    torch.manual_seed(0)
    model = build_model("deepfm", FIELDS, embed_dim=DIM, mlp_dims=[8]).eval()
    scores = np.random.default_rng(0).standard_normal((sum(FIELDS), DIM)).astype(np.float32)
    return model, scores, dataset


def test_tier_map_follows_the_ranking_and_the_shares():
    scores = np.arange(40, dtype=np.float32).reshape(10, 4)  # entry 39 most important
    planner = TierPlanner(scores, [4, 6])
    shape = Shape((TierSpec("int8"), TierSpec("int2")), (0.25, 0.75))
    tmap = planner.tier_map(shape, 8)
    flat = tmap.reshape(-1)
    assert list(flat[38:]) == [1, 1] and list(flat[32:38]) == [2] * 6 and not flat[:32].any()
    rows = planner.tier_map(Shape((TierSpec("int4"),), (1.0,), "row"), 3)
    assert rows[7:].all() and not rows[:7].any()  # the three rows of largest |score|


def test_fit_is_the_largest_count_that_fits():
    rng = np.random.default_rng(1)
    planner = TierPlanner(rng.standard_normal((50, 8)), [20, 30])
    shape = Shape((TierSpec("int4"),), (1.0,))
    limit = 150
    kept, tmap = planner.fit(shape, lambda m, t: planner.table_bytes(m, t) <= limit)
    assert planner.table_bytes(tmap, shape.tiers) <= limit
    assert planner.table_bytes(planner.tier_map(shape, kept + 1), shape.tiers) > limit
    assert planner.fit(shape, lambda m, t: False) is None


@pytest.mark.parametrize("axis,budget", [("table", "1/8"), ("table", 300), ("artifact", None)])
def test_plan_for_bytes_fits_is_best_on_validation_and_exports_exactly(setup, tmp_path, axis,
                                                                      budget):
    model, scores, dataset = setup
    n = sum(FIELDS)
    if budget is None:  # an artifact budget a little above the all-pruned artifact
        from shaver.table.size import predict_tiered_bytes

        floor = predict_tiered_bytes(model, np.zeros((n, DIM), np.uint8), [TierSpec("fp32")])[0]
        budget = floor + 200
    chosen, record = plan_for_bytes(model, scores, budget, dataset, axis=axis)
    limit = record["budget"]["value"]
    key = "table_bytes" if axis == "table" else "artifact_bytes"
    assert record[key] <= limit
    assert record["val"]["auc"] == max(c["val"]["auc"] for c in record["candidates"])
    labels = {c["plan"] for c in record["candidates"]}
    assert "fp32/entry" in labels  # pruning alone is always a candidate
    out = export_artifact(chosen, tmp_path / "c.shaver")
    art = load_artifact(out.path)
    assert art.table_bytes() == record["table_bytes"] and out.bytes == record["artifact_bytes"]
    assert 0 <= record["metrics"]["auc"] <= 1
    x = torch.as_tensor(np.array([[0, 7, 37], [6, 36, 41]]))
    with torch.no_grad():
        np.testing.assert_allclose(art.predict(x.numpy()), torch.sigmoid(chosen(x)).numpy(),
                                   atol=1e-5)


def test_a_roomy_budget_keeps_ptq_or_better(setup):
    model, scores, dataset = setup
    _, record = plan_for_bytes(model, scores, "1/2", dataset)
    plans = {c["plan"]: c for c in record["candidates"]}
    assert plans["int8/field/entry"]["kept"] == sum(FIELDS) * DIM  # int8 PTQ fits in 1/2
    assert record["val"]["auc"] >= plans["int8/field/entry"]["val"]["auc"]


def test_budget_below_the_smallest_table_is_refused_with_the_minimum(setup):
    model, scores, dataset = setup
    codebook = len(FIELDS) * DIM * 4
    with pytest.raises(BudgetError, match=f"below the minimum table size of {codebook} bytes"):
        plan_for_bytes(model, scores, codebook - 1, dataset)
    with pytest.raises(BudgetError, match="minimum artifact size of"):
        plan_for_bytes(model, scores, 100, dataset, axis="artifact")
    rowwise = [Shape((TierSpec("fp32"),), (1.0,), "row")]  # a whole row needs 7 + 16 bytes
    with pytest.raises(BudgetError, match=r"tiers fp32/row do not fit 50 table bytes: keeping "
                                          r"a single entry takes 6[58] bytes; .*value dtypes: "
                                          r"fp32, fp16, int8, int4, int2; scales: field, row"):
        plan_for_bytes(model, scores, codebook + 2, dataset, shapes=rowwise)
    with pytest.raises(BudgetError, match="unknown byte axis 'disk': expected one of table, "
                                          "artifact"):
        plan_for_bytes(model, scores, 100, dataset, axis="disk")


def test_table_budget_spellings():
    assert resolve_table_budget("1/16", 1600) == 100
    assert resolve_table_budget("2KiB", 1) == 2048 and resolve_table_budget(77, 1) == 77
    with pytest.raises(BudgetError, match="1/0"):
        resolve_table_budget("1/0", 10)
    with pytest.raises(BudgetError, match="positive integer"):
        resolve_table_budget(0, 10)


def test_parse_tiers_and_its_errors():
    shape = parse_tiers("int8:0.1,int4/row:0.3,int2:0.6")
    assert shape.label == "int8/field:0.1+int4/row:0.3+int2/field:0.6/entry"
    assert parse_tiers("int4").shares == (1.0,)
    with pytest.raises(BudgetError, match="unknown value dtype 'int3': expected one of fp32, "
                                          "fp16, int8, int4, int2"):
        parse_tiers("int3:0.5,int4:0.5")
    with pytest.raises(BudgetError, match="shares positive, summing to 1"):
        parse_tiers("int8,int4")
    with pytest.raises(BudgetError, match=r"must be positive and sum to 1, got \[0.5, 0.6\]"):
        parse_tiers("int8:0.5,int4:0.6")
    with pytest.raises(BudgetError, match="unknown granularity 'col'"):
        Shape((TierSpec("int4"),), (1.0,), "col")
    with pytest.raises(BudgetError, match="1 to 8 tiers"):
        Shape(tuple(TierSpec("int4") for _ in range(9)), (1 / 9,) * 9)
    assert len({s.label for s in default_shapes()}) == len(default_shapes())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, setup):
    from shaver.attribution.result import Attribution
    from shaver.train.checkpoint import model_fingerprint, save_run

    model, scores, dataset = setup
    root = tmp_path_factory.mktemp("cli")
    run = save_run(root / "run", model, dataset=dataset, metrics={}, seed=0, train_config={})
    n = sum(FIELDS)
    Attribution(phi=torch.from_numpy(scores), stderr=torch.zeros(n, DIM), count=5,
                codebook=torch.ones(len(FIELDS), DIM), placeholder="codebook",
                model_fingerprint=model_fingerprint(model),
                dataset_fingerprint=dataset.fingerprint,
                field_dims=FIELDS).save(run / "attribution-codebook.safetensors")
    return run


def _prune(run_dir, tmp_path, *argv):
    from shaver.cli import main

    return main(["prune", "--run", str(run_dir), "--out", str(tmp_path / "o"), *argv])


def test_cli_table_and_artifact_byte_budgets(run_dir, tmp_path, capsys, monkeypatch):
    import json

    from shaver.pruning.io import load_pruned

    monkeypatch.setattr("shaver.cli.STAGE_CLIS", ("shaver.pruning.cli",))
    assert _prune(run_dir, tmp_path, "--table-bytes", "1/8,300", "--bytes", "1MiB",
                  "--sparsity", "0.5") == 0
    printed = capsys.readouterr().out
    assert "table-bytes=" in printed and "plan" in printed
    rows = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [r["budget"] for r in rows][1:] == ["table-bytes=84", "table-bytes=300",
                                               f"artifact-bytes={2 ** 20}"]
    for row in rows[1:]:
        pruned = load_pruned(row["path"], device="cpu")
        assert pruned.info["table_bytes"] == row["table_bytes"] and row["plan"]
        out = export_artifact(row["path"], tmp_path / "a.shaver")
        assert out.bytes == row["bytes"]  # the feature map is counted, as export adds it
        assert load_artifact(out.path).table_bytes() == row["table_bytes"]
    assert rows[0]["plan"] is None  # a sparsity budget: fp32 pruning, v1 artifact
    out = export_artifact(rows[0]["path"], tmp_path / "a.shaver")
    assert load_artifact(out.path).table_bytes() == rows[0]["table_bytes"]
    # --precision fp32 with a table budget: pruning alone; --tiers: one family
    assert _prune(run_dir, tmp_path, "--table-bytes", "1/8", "--precision", "fp32", "-q") == 0
    (row,) = json.loads((tmp_path / "o" / "results.json").read_text())
    assert row["plan"] == "fp32/entry"
    assert _prune(run_dir, tmp_path, "--table-bytes", "1/4", "--tiers", "int8:0.5,int2:0.5",
                  "--granularity", "row", "-q") == 0
    (row,) = json.loads((tmp_path / "o" / "results.json").read_text())
    assert row["plan"] == "int8/field:0.5+int2/field:0.5/row"


@pytest.mark.parametrize("argv, message", [
    (["--table-bytes", "10B"], "below the minimum table size of 48 bytes"),
    (["--table-bytes", "1/8", "--tiers", "int3"], "unknown value dtype 'int3': expected one "
                                                   "of fp32, fp16, int8, int4, int2"),
    (["--table-bytes", "1/8", "--finetune"], "fine-tuning is not available"),
    (["--table-bytes", "a lot"], "cannot read a byte size"),
])
def test_cli_byte_budget_bad_input(run_dir, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr("shaver.cli.STAGE_CLIS", ("shaver.pruning.cli",))
    assert _prune(run_dir, tmp_path, *argv) == 2
    assert message in capsys.readouterr().err
