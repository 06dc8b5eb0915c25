"""``auto``: candidates, selection on validation, the default of prune(), bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shaver.attribution.api import attribute
from shaver.attribution.semivalue import MissingBinsError
from shaver.data.store import write_prepared
from shaver.pruning import auto
from shaver.pruning.api import prune
from shaver.pruning.budget_aware import budget_aware_scores
from shaver.table.budget import Budget
from shaver.table.order import ScoreError
from shaver.train.loop import evaluate
from test_pruning_util import DIM, FIELD_DIMS, TinyModel, tiny_dataset

N = sum(FIELD_DIMS)
PAPER = ["shaver", "shaver/zero-placeholder", "shaver/refit", "floor/codebook", "floor/zero"]
AWARE = ["budget-aware", "budget-aware/zero-placeholder", "budget-aware/signed"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("auto") / "ds")


@pytest.fixture(scope="module")
def setup(dataset):
    model = TinyModel().eval()
    attr = attribute(model, dataset, max_samples=120, tolerance=None, bins=4, quiet=True,
                     device="cpu", batch_size=40)
    return model, attr


def test_auto_is_the_default_and_keeps_the_best_on_validation(setup, dataset):
    model, attr = setup
    results = prune(model, attr, [0.5, 0.9, 1.0], dataset=dataset, device="cpu")
    for r in results:
        record = r.info["auto"]
        names = [c["name"] for c in record["candidates"]]
        assert names == PAPER + AWARE + ["magnitude", "taylor"]
        assert r.info["method"] == "auto" and r.info["winner"] == record["winner"]
        best = names.index(r.info["winner"])
        assert r.info["winner"] == r.row()["winner"] and record["candidates"][best]["tied"]
        tied = [c for c in record["candidates"] if c["tied"]]
        if "shaver" not in [c["name"] for c in tied]:
            assert r.kept == min(c["kept"] for c in tied)
        else:
            assert r.info["winner"] == "shaver"
        val = evaluate(r.model, dataset, "val", device="cpu")
        assert math.isclose(val["auc"], record["candidates"][best]["val_auc"], abs_tol=1e-9)
        assert r.metrics["auc"] == pytest.approx(evaluate(r.model, dataset, "test")["auc"])
        floor = record["candidates"][names.index("floor/zero")]
        assert floor["kept"] == 0 and r.kept <= Budget.parse(r.budget.label).kept_entries(
            N * DIM)
    assert results[2].kept == 0  # sparsity 1.0: every candidate prunes everything
    # the default attribution data is train: the selection's validation split is unseen
    assert not any(r.info["auto"]["validation_in_attribution"] for r in results)
    assert not auto.saw_validation(type("A", (), {"settings": {"data": "train:0.5"}})())


def test_budget_aware_cut_targets_the_active_kept_fraction(setup, dataset):
    from shaver.attribution.semivalue import active_kept_fraction
    from shaver.pruning.budget_aware import budget_aware_cut

    model, attr = setup
    freq = np.arange(1, N + 1)
    ctx = auto.AutoContext(model, attr, dataset, freq)
    result = budget_aware_cut(ctx, Budget.sparsity(0.75))
    assert result.kept == Budget.sparsity(0.75).kept_entries(N * DIM)
    mask = result.model.embedding.mask.numpy().astype(bool)
    assert result.info["active_kept_fraction"] == pytest.approx(active_kept_fraction(mask, freq))
    assert 0 < result.info["semivalue_centre"] < 1 and result.info["scorer"] == "budget-aware"
    zero = budget_aware_cut(ctx, Budget.sparsity(0.75), zero=True)  # same ranking, cached
    assert np.array_equal(zero.model.embedding.mask.numpy(), result.model.embedding.mask.numpy())
    assert zero.info["placeholder"] == "zero"
    scores = budget_aware_scores(attr, None)
    assert np.allclose(scores.values, attr.phi.numpy(), atol=1e-6)
    assert scores.scorer == "budget-aware" and scores.placeholder == attr.placeholder


def test_without_bins_auto_skips_budget_aware_and_says_how_to_get_them(setup, dataset):
    model, attr = setup
    bare = type(attr)(phi=attr.phi, stderr=attr.stderr, count=attr.count,
                      codebook=attr.codebook, placeholder=attr.placeholder,
                      settings=attr.settings, model_fingerprint=attr.model_fingerprint,
                      dataset_fingerprint=attr.dataset_fingerprint, field_dims=attr.field_dims)
    (r,) = prune(model, bare, [0.5], dataset=dataset, device="cpu")
    assert [c["name"] for c in r.info["auto"]["candidates"]] == PAPER + ["magnitude", "taylor"]
    with pytest.raises(MissingBinsError, match="Re-run `shaver attribute --run RUN`"):
        budget_aware_scores(bare, 0.1)


def test_auto_is_refused_without_a_validation_split(setup, dataset, tmp_path):
    model, attr = setup
    with pytest.raises(auto.AutoError, match="no dataset given; method 'auto' chooses each "
                       "budget's cut on the validation split"):
        prune(model, attr, [0.5])
    ids = np.asarray(dataset.ids("train"))
    labels = np.asarray(dataset.labels("train"))
    empty = (ids[:0], labels[:0], np.arange(0))
    no_val = write_prepared(
        tmp_path / "noval", field_names=[f"f{i}" for i in range(len(FIELD_DIMS))],
        vocabularies={f"f{i}": [f"v{j}" for j in range(d)] for i, d in enumerate(FIELD_DIMS)},
        splits={"train": (ids, labels, np.arange(len(ids))), "val": empty,
                "test": (ids, labels, np.arange(len(ids)))},
        frequencies=np.bincount(ids.reshape(-1), minlength=N))
    bare = type(attr)(phi=attr.phi, stderr=attr.stderr, count=1, codebook=attr.codebook,
                      placeholder="codebook", model_fingerprint=attr.model_fingerprint)
    with pytest.raises(auto.AutoError, match="noval: no validation rows; method 'auto'"):
        prune(model, bare, [0.5], dataset=no_val)


def test_method_errors(setup, dataset):
    model, attr = setup
    with pytest.raises(ScoreError, match="unknown method 'best'"):
        prune(model, attr, [0.5], dataset=dataset, method="best")
    with pytest.raises(ScoreError, match="method 'auto' chooses the order and codebook"):
        prune(model, attr, [0.5], dataset=dataset, method="auto", order="signed")
    with pytest.raises(ScoreError, match="method 'shaver' needs an Attribution"):
        prune(model, np.zeros((N, DIM)), [0.5], method="shaver")
    with pytest.raises(auto.AutoError, match="unknown candidate factories \\['x'\\]"):
        auto.prune_auto(model, attr, [Budget.sparsity(0.5)], dataset=dataset,
                        factories=["x"])
    (r,) = prune(model, attr, [0.5], dataset=dataset, codebook="refit")
    assert r.info["method"] == "shaver" and "winner" not in r.info


def test_registered_candidates_join_the_selection_and_must_fit(setup, dataset, monkeypatch):
    model, attr = setup
    monkeypatch.setattr(auto, "CANDIDATES", dict(auto.CANDIDATES))
    from shaver.pruning.api import Pruner

    def extra(ctx):
        pruner = Pruner(ctx.model, attr, frequencies=ctx.frequencies)
        return [auto.Candidate("half-kept", lambda b: pruner.cut(b, pruner.resolve(b) // 2)),
                auto.Candidate("everything", lambda b: pruner.cut(b, pruner.total))]

    auto.register_candidates("test", extra)
    with pytest.raises(auto.AutoError, match="candidate 'everything' does not fit "
                       "sparsity=0.9: it keeps 36 entries"):
        auto.prune_auto(model, attr, [Budget.sparsity(0.9)], dataset=dataset,
                        factories=["shaver", "test"])
    auto.register_candidates("test", lambda ctx: extra(ctx)[:1])
    (r,) = auto.prune_auto(model, attr, [Budget.sparsity(0.5)], dataset=dataset,
                           factories=["shaver", "test"])
    assert [c["name"] for c in r.info["auto"]["candidates"]][-1] == "half-kept"
    assert r.info["auto"]["candidates"][-1]["kept"] == 9


def test_auto_says_when_the_attribution_saw_the_validation_split(dataset, caplog):
    model = TinyModel().eval()
    seen = attribute(model, dataset, data="train+val", max_samples=40, tolerance=None, bins=4,
                     quiet=True, device="cpu", batch_size=40)
    with caplog.at_level("WARNING"):
        results = prune(model, seen, [0.5], dataset=dataset)
    assert results[0].info["auto"]["validation_in_attribution"]
    assert "including the validation split" in caplog.text
