"""THE chooser: candidates (rankings x plan families x head precisions), one binary search
over one size oracle, per-candidate recalibration, the selection on validation, restrictions,
refusals; and the plan families it fits (TierPlanner, parse_tiers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shaver.attribution.api import attribute
from shaver.attribution.semivalue import MissingBinsError, active_kept_fraction
from shaver.data.store import write_prepared
from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.errors import ArtifactError, BudgetError
from shaver.models.base import calibration_of
from shaver.models.registry import build_model
from shaver.pruning.api import check_validation, cut, open_chooser, prune, saw_validation
from shaver.pruning.budget_aware import budget_aware_rankings, budget_aware_scores
from shaver.pruning.candidates import FP32, UNIFORM, Candidate, ChooserError, candidates_for
from shaver.pruning.chooser import with_budget_aware
from shaver.pruning.rankings import PAPER, Ranking, zero_placeholder
from shaver.pruning.scorers import shapley_scores
from shaver.runtime.calibration import fit_logit_calibration, log_losses
from shaver.runtime.headq import HEAD_DTYPES
from shaver.runtime.tiered import TierSpec
from shaver.table.budget import Budget
from shaver.table.families import Shape, TierPlanner, default_shapes, parse_tiers
from shaver.table.order import PruneOrder
from shaver.table.size import feature_map_metadata, plan_bytes
from shaver.train.evaluation import source_logits
from shaver.train.loop import evaluate, fit
from shaver.train.source import SplitSource
from test_pruning_util import DIM, random_ids, tiny_dataset

FIELDS = [7, 30, 5]
N = sum(FIELDS)
RANKINGS = ["shaver", "shaver/zero", "shaver/refit", "magnitude", "taylor"]
AWARE = ["budget-aware", "budget-aware/zero", "budget-aware/signed"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("chooser") / "ds", rows=400, field_dims=FIELDS)


@pytest.fixture(scope="module")
def model(dataset):
    """A DeepFM trained a little (so the cuts differ and their calibrations too)."""
    torch.manual_seed(0)
    model = build_model("deepfm", FIELDS, embed_dim=DIM, mlp_dims=[8])
    fit(model, dataset, epochs=4, lr=0.03, batch_size=32, patience=None, quiet=True,
        device="cpu")
    return model.eval()


@pytest.fixture(scope="module")
def attr(model, dataset):
    return attribute(model, dataset, max_samples=120, tolerance=None, bins=4, quiet=True,
                     device="cpu", batch_size=40)


def bare(attr, **overrides):
    """The attribution without its bins (no budget-aware rankings)."""
    fields = dict(phi=attr.phi, stderr=attr.stderr, count=attr.count, codebook=attr.codebook,
                  placeholder=attr.placeholder, settings=attr.settings,
                  model_fingerprint=attr.model_fingerprint,
                  dataset_fingerprint=attr.dataset_fingerprint, field_dims=attr.field_dims)
    return type(attr)(**{**fields, **overrides})


def names_of(result):
    return [c["name"] for c in result.info["selection"]["candidates"]]


def x_val(dataset):
    return np.array(dataset.ids("val")[:64], dtype=np.int64)


# -- the default: auto ----------------------------------------------------------------------

def test_auto_is_the_default_and_keeps_its_choice_on_validation(model, attr, dataset):
    results = prune(model, attr, [0.5, 0.9, 1.0], dataset=dataset, device="cpu")
    floors = {"floor/shaver", "floor/shaver/zero"}  # nothing kept, codebook or zero placeholder
    for r in results:
        record = r.info["selection"]
        names = names_of(r)
        if r.budget.kept_entries(N * DIM):  # every ranking at the budget, and the floors
            assert [n for n in names if not n.startswith("floor/")] == RANKINGS + AWARE
            assert {n for n in names if n.startswith("floor/")} == floors
        assert r.info["method"] == "auto" and r.row()["winner"] == r.info["winner"]
        assert r.info["winner"] in names and "DeLong" in record["rule"]
        best = record["candidates"][names.index(r.info["winner"])]
        assert best["tied"]
        tied = [c for c in record["candidates"] if c["tied"]]
        if PAPER in [c["name"] for c in tied]:
            assert r.info["winner"] == PAPER
        else:
            assert r.kept == min(c["kept"] for c in tied)
        # a kept-entry budget: fp32 values and head, the budget's kept count or nothing
        assert r.info["plan"] == "fp32/entry" and r.info["head_dtype"] == "fp32"
        assert all(c["kept"] in (0, r.budget.kept_entries(N * DIM))
                   for c in record["candidates"])
        # the recorded validation metrics are those of the returned (recalibrated) model
        val = evaluate(r.model, dataset, "val", device="cpu")
        assert math.isclose(val["auc"], best["val_auc"], abs_tol=1e-6)
        assert math.isclose(val["logloss"], best["val_logloss"], rel_tol=1e-5)
        assert r.info["val_metrics"] == {"auc": best["val_auc"], "logloss": best["val_logloss"]}
        assert r.metrics["auc"] == pytest.approx(evaluate(r.model, dataset, "test")["auc"])
    # sparsity 1.0: every ranking leaves the same plan: one floor per placeholder
    assert results[2].kept == 0 and set(names_of(results[2])) == floors
    # the default attribution data is train: the selection's validation split is unseen
    assert not saw_validation(attr)
    assert not saw_validation(type("A", (), {"settings": {"data": "train:0.5"}})())
    assert saw_validation(type("A", (), {"settings": {"data": "train+val"}})())


def test_each_candidate_is_recalibrated_and_the_winner_carries_its_own(model, attr, dataset,
                                                                      tmp_path):
    chooser, names = open_chooser(model, attr, "auto", dataset=dataset)
    budget = Budget.sparsity(0.7)
    candidates = candidates_for(budget, with_budget_aware(chooser, budget, names))
    pruned, record = chooser.choose(budget, candidates)
    recorded = {c["name"]: c for c in record["selection"]["candidates"]}
    source = SplitSource(dataset, "val", torch.device("cpu"), in_memory=True)
    fitted = {}
    for candidate in candidates:
        cut_ = chooser.fit(candidate, budget, calibrated=True)
        logits, labels = source_logits(chooser.build(cut_), source, 1 << 14)
        z, y = logits.double().numpy(), labels.numpy()
        scale, bias = fit_logit_calibration(z, y)
        fitted[candidate.name] = (scale, bias)
        ll = float(log_losses(z, y, scale, bias).mean())
        assert recorded[candidate.name]["val_logloss"] == pytest.approx(ll, rel=1e-9)
        # the fit never loses to the logits as they are, nor to the constant base rate
        rate = float(np.mean(y, dtype=np.float64))
        assert ll <= log_losses(z, y).mean() + 1e-9
        assert ll <= -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate)) + 1e-9
    assert len(set(fitted.values())) > len(fitted) // 2  # each candidate its own pair
    winner = fitted[record["winner"]]
    assert record["calibration"] == pytest.approx({"scale": winner[0], "bias": winner[1]})
    stored = calibration_of(pruned)
    assert stored == pytest.approx(winner, rel=1e-6)  # float32 in the model
    # prune() stores it in its record and the artifact applies it
    (r,) = prune(model, attr, [budget], dataset=dataset)
    assert r.info["calibration"] == record["calibration"] and r.row()["calibrated"]
    art = load_artifact(export_artifact(r, tmp_path / "a.shaver").path)
    assert tuple(art.calibration) == pytest.approx(stored, rel=0, abs=0)
    x = x_val(dataset)
    with torch.no_grad():
        want = torch.sigmoid(r.model(torch.as_tensor(x, dtype=torch.long))).numpy()
    np.testing.assert_allclose(art.predict(x), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["bytes", "table_bytes"])
@pytest.mark.parametrize("head", HEAD_DTYPES)
def test_auto_fits_byte_budgets_to_the_byte(model, attr, dataset, tmp_path, kind, head):
    meta = feature_map_metadata(dataset)
    empty = plan_bytes(model, np.zeros((N, DIM), np.uint8), [TierSpec("fp32")],
                       head_dtype=head, metadata=meta, calibrated=True)
    full = plan_bytes(model, np.ones((N, DIM), np.uint8), [TierSpec("fp32")],
                      head_dtype=head, metadata=meta, calibrated=True)
    index = 0 if kind == "bytes" else 1
    limit = (empty[index] + full[index]) // 2  # between all pruned and all kept in fp32
    budget = Budget(kind, limit)
    chooser, names = open_chooser(model, attr, "auto", dataset=dataset)
    r = cut(chooser, names, budget, "auto", heads=[head])
    assert r.info["head_dtype"] == head and r.row()["head_dtype"] == head
    assert (r.artifact_bytes, r.table_bytes)[index] <= limit
    out = export_artifact(r, tmp_path / "a.shaver")
    art = load_artifact(out.path)
    assert out.bytes == r.artifact_bytes == out.path.stat().st_size
    assert art.table_bytes() == r.table_bytes and art.head_dtype == head
    assert art.info["budget"] == budget.to_json() and art.info["winner"] == r.info["winner"]
    # the winner is the largest cut of its plan family that fits (one binary search)
    candidate = next(c for c in candidates_for(budget, with_budget_aware(chooser, budget, names),
                                               heads=[head]) if c.name == r.info["winner"])
    planner = chooser.planner(candidate.ranking)
    units = r.kept if candidate.family.granularity == "entry" else r.kept // DIM
    if units < planner.units(candidate.family.granularity):  # (int2 may keep everything)
        more = planner.tier_map(candidate.family, units + 1)
        assert chooser.sizes(candidate, more, calibrated=True)[index] > limit
    x = x_val(dataset)
    with torch.no_grad():
        want = torch.sigmoid(r.model(torch.as_tensor(x, dtype=torch.long))).numpy()
    np.testing.assert_allclose(art.predict(x), want, atol=1e-5, rtol=0)


def test_a_table_fraction_is_of_the_fp32_table_and_a_roomy_one_keeps_ptq(model, attr, dataset):
    (r,) = prune(model, attr, ["1/8"], dataset=dataset)
    assert r.table_bytes <= N * DIM * 4 // 8 and r.budget.label == "table_bytes=1/8"
    (r,) = prune(model, attr, ["1/2"], dataset=dataset)
    plans = {c["name"]: c for c in r.info["selection"]["candidates"]}
    assert plans["shaver int8/field/entry"]["kept"] == N * DIM  # int8 PTQ fits in 1/2
    assert r.info["head_dtype"] == "fp32"  # a table budget does not count the head


def test_values_heads_and_families_restrict_the_candidates(model, attr, dataset):
    budget = Budget.bytes_(7300)
    for values, heads in ((["int8", "int4"], ["fp16"]), (["fp32"], ["fp32", "int8"]),
                          (["int2"], None), (None, ["int8"])):
        allowed = candidates_for(budget, RANKINGS, values=values, heads=heads)
        assert allowed and all(c.head in (heads or HEAD_DTYPES) for c in allowed)
        assert all(t.value_dtype in (values or UNIFORM) for c in allowed for t in c.family.tiers)
        (r,) = prune(model, attr, [budget], dataset=dataset, values=values, heads=heads)
        assert all(t["value_dtype"] in (values or UNIFORM) for t in r.info["tiers"])
        assert r.info["head_dtype"] in (heads or HEAD_DTYPES)
        assert len(names_of(r)) <= len(allowed) + len(AWARE) * len(allowed) // len(RANKINGS)
    # a kept-entry budget keeps fp32 unless told otherwise; then the one dtype allowed
    assert {c.family for c in candidates_for(Budget.sparsity(0.5), RANKINGS)} == {FP32}
    (r,) = prune(model, attr, [0.5], dataset=dataset, values=["fp16"])
    assert r.info["plan"] == "fp16/entry" and r.kept == N * DIM // 2
    # one family: every candidate is cut to it
    family = parse_tiers("int8:0.5,int2:0.5", "row")
    (r,) = prune(model, attr, ["1/4"], dataset=dataset, families=[family])
    assert r.info["plan"] == family.label == "int8/field:0.5+int2/field:0.5/row"
    assert [t["value_dtype"] for t in r.info["tiers"]] == ["int8", "int2"]
    assert all(family.label in name for name in names_of(r))
    with pytest.raises(ChooserError, match="no plan family allows the value dtypes fp64 for "
                                           "budget bytes=7300"):
        candidates_for(budget, RANKINGS, values=["fp64"])


def test_a_byte_budget_below_the_smallest_artifact_is_refused(model, attr, dataset):
    meta = feature_map_metadata(dataset)

    def smallest(index, calibrated, head="fp32", tiers=None, tier_maps=None):
        tiers = tiers or [TierSpec("fp32")]
        maps = tier_maps or [np.zeros((N, DIM), np.uint8), np.ones((N, DIM), np.uint8)]
        return min(plan_bytes(model, t, list(tiers), head_dtype=head, metadata=meta,
                              calibrated=calibrated)[index] for t in maps)

    low = smallest(0, True)
    (r,) = prune(model, attr, [Budget.bytes_(low)], dataset=dataset, values=["fp32"],
                 heads=["fp32"])
    assert r.artifact_bytes == low  # the smallest artifact is served
    with pytest.raises(BudgetError) as info:
        prune(model, attr, [Budget.bytes_(low - 1)], dataset=dataset, values=["fp32"],
              heads=["fp32"])
    assert str(info.value) == (f"budget bytes={low - 1} is below the smallest artifact this "
                               f"model can have at the allowed precisions ({low} bytes, "
                               f"head fp32)")
    # the paper's cut alone is not recalibrated: its floor has no calibration section
    plain = smallest(0, False)
    assert plain < low
    with pytest.raises(BudgetError) as info:
        prune(model, attr, [Budget.bytes_(plain - 1)], dataset=dataset, method="shaver")
    assert f"({plain} bytes, head fp32)" in str(info.value)
    (r,) = prune(model, attr, [Budget.bytes_(plain)], dataset=dataset, method="shaver")
    assert r.artifact_bytes == plain and "calibration" not in r.info
    # a table budget below every family's smallest table
    family = parse_tiers("int8:0.5,int2:0.5")
    planner = TierPlanner(np.abs(attr.phi.numpy()), FIELDS)
    ends = [planner.tier_map(family, 0), planner.tier_map(family, N * DIM)]
    least = smallest(1, True, tiers=family.tiers, tier_maps=ends)
    (r,) = prune(model, attr, [Budget.table_bytes(least)], dataset=dataset, families=[family])
    assert r.table_bytes == least
    with pytest.raises(BudgetError) as info:
        prune(model, attr, [Budget.table_bytes(least - 1)], dataset=dataset, families=[family])
    assert str(info.value) == (f"budget table_bytes={least - 1} is below the smallest table "
                               f"this model can have at the allowed precisions ({least} bytes, "
                               f"head fp32)")
    # a kept-entry budget cannot be served by whole rows; an unknown head is named
    rows = parse_tiers("int8", "row")
    with pytest.raises(BudgetError) as info:
        prune(model, attr, [0.5], dataset=dataset, families=[rows])
    assert str(info.value) == ("budget sparsity=0.5 counts kept entries, and the plan families "
                               "allowed (int8/field/row) keep whole rows; give a byte budget or "
                               "an entry family")
    with pytest.raises(ArtifactError, match="head dtype must be one of fp32, fp16, int8, got "
                                            "'int3'"):
        prune(model, attr, [0.5], dataset=dataset, heads=["int3"])


def test_auto_is_refused_without_a_validation_split(model, attr, dataset, tmp_path):
    hint = ("method 'auto' chooses each budget's cut on the validation split: give a "
            "prepared dataset with a non-empty 'val' split, or use method 'shaver' (the "
            "paper's ranking, no validation needed)")
    with pytest.raises(ChooserError) as info:
        prune(model, attr, [0.5])
    assert str(info.value) == f"no dataset given; {hint}"
    ids = np.asarray(dataset.ids("train"))
    labels = np.asarray(dataset.labels("train"))
    empty = (ids[:0], labels[:0], np.arange(0))
    no_val = write_prepared(
        tmp_path / "noval", field_names=[f"f{i}" for i in range(len(FIELDS))],
        vocabularies={f"f{i}": [f"v{j}" for j in range(d)] for i, d in enumerate(FIELDS)},
        splits={"train": (ids, labels, np.arange(len(ids))), "val": empty,
                "test": (ids, labels, np.arange(len(ids)))},
        frequencies=np.bincount(ids.reshape(-1), minlength=N))
    with pytest.raises(ChooserError) as info:
        prune(model, bare(attr, dataset_fingerprint=None), [0.5], dataset=no_val)
    assert str(info.value) == f"{no_val.path}: no validation rows; {hint}"
    with pytest.raises(ChooserError):
        check_validation(no_val)
    # the paper's cut needs none
    (r,) = prune(model, bare(attr, dataset_fingerprint=None), [0.5], dataset=no_val,
                 method="shaver")
    assert r.kept == N * DIM // 2


# -- rankings ---------------------------------------------------------------------------------

def test_budget_aware_rankings_target_the_active_kept_fraction(attr):
    freq = np.arange(1, N + 1)
    kept = Budget.sparsity(0.75).kept_entries(N * DIM)
    rankings, record = budget_aware_rankings(attr, kept, freq)
    assert [r.name for r in rankings] == AWARE
    assert [r.placeholder for r in rankings] == ["codebook", "zero", "codebook"]
    assert [r.order for r in rankings] == ["abs", "abs", "signed"]
    mask = PruneOrder(rankings[0].scores.values, "abs").mask(kept)
    assert record["active_kept_fraction"] == pytest.approx(active_kept_fraction(mask, freq))
    assert 0 < record["semivalue_centre"] < 1
    assert rankings[0].scores.scorer == "budget-aware"
    assert np.array_equal(rankings[1].scores.values, rankings[0].scores.values)
    scores = budget_aware_scores(attr, None)  # no target: the Shapley value itself
    assert np.allclose(scores.values, attr.phi.numpy(), atol=1e-6)
    assert scores.scorer == "budget-aware" and scores.placeholder == attr.placeholder


def test_without_bins_auto_skips_budget_aware_and_says_how_to_get_them(model, attr, dataset):
    (r,) = prune(model, bare(attr), [0.5], dataset=dataset, device="cpu")
    assert [n for n in names_of(r) if not n.startswith("floor/")] == RANKINGS
    with pytest.raises(MissingBinsError, match="Re-run `shaver attribute --run RUN`"):
        budget_aware_scores(bare(attr), 0.1)


def test_a_ranking_added_to_the_chooser_joins_the_selection(model, attr, dataset):
    chooser, names = open_chooser(model, bare(attr), "auto", dataset=dataset)
    reverse = Ranking("reverse", zero_placeholder(shapley_scores(attr)), order="signed")
    chooser.rankings["reverse"] = reverse
    budget = Budget.sparsity(0.5)
    candidates = candidates_for(budget, names + ["reverse"])
    assert [c.name for c in candidates] == RANKINGS + ["reverse"]
    _, record = chooser.choose(budget, candidates)
    assert [c["name"] for c in record["selection"]["candidates"]
            if not c["name"].startswith("floor/")] == RANKINGS + ["reverse"]
    # one candidate: its cut as it is, no validation and no recalibration
    model_, record = chooser.choose(budget, [Candidate("reverse", FP32)])
    assert "selection" not in record and "calibration" not in record
    assert calibration_of(model_) is None and record["winner"] is None
    assert record["candidate"] == "reverse"
    assert record["placeholder"] == "zero" and record["order"] == "signed"


def test_auto_says_when_the_attribution_saw_the_validation_split(model, dataset, caplog):
    seen = attribute(model, dataset, data="train+val", max_samples=40, tolerance=None, bins=4,
                     quiet=True, device="cpu", batch_size=40)
    with caplog.at_level("WARNING"):
        prune(model, seen, [0.5], dataset=dataset)
    assert "including the validation split" in caplog.text


# -- plan families ----------------------------------------------------------------------------

def test_tier_map_follows_the_ranking_and_the_shares():
    scores = np.arange(40, dtype=np.float32).reshape(10, 4)  # entry 39 most important
    planner = TierPlanner(scores, [4, 6])
    shape = Shape((TierSpec("int8"), TierSpec("int2")), (0.25, 0.75))
    tmap = planner.tier_map(shape, 8)
    flat = tmap.reshape(-1)
    assert list(flat[38:]) == [1, 1] and list(flat[32:38]) == [2] * 6 and not flat[:32].any()
    rows = planner.tier_map(Shape((TierSpec("int4"),), (1.0,), "row"), 3)
    assert rows[7:].all() and not rows[:7].any()  # the three rows of largest |score|
    assert planner.units("entry") == 40 and planner.units("row") == 10


def test_fit_is_the_largest_count_that_fits():
    rng = np.random.default_rng(1)
    planner = TierPlanner(rng.standard_normal((50, 8)), [20, 30])
    shape = Shape((TierSpec("int4"),), (1.0,))
    limit = 150
    kept, tmap = planner.fit(shape, lambda m, t: planner.table_bytes(m, t) <= limit)
    assert planner.table_bytes(tmap, shape.tiers) <= limit
    assert planner.table_bytes(planner.tier_map(shape, kept + 1), shape.tiers) > limit
    assert planner.fit(shape, lambda m, t: False) is None


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


def test_random_ids_helper_fits_these_fields():
    assert random_ids(5, field_dims=FIELDS).max() < N
