"""prune(): exactness at sparsity 0, sort-once nested cuts, bytes budgets, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shaver.attribution.result import Attribution
from shaver.data.feature_map import feature_map_of
from shaver.deploy.artifact import export_artifact
from shaver.errors import BudgetError, FingerprintMismatch, ShaverError
from shaver.pruning.api import Pruner, as_scores, prune
from shaver.pruning.finetune import FinetuneConfig
from shaver.table.budget import Budget
from shaver.table.order import ScoreError
from shaver.table.size import minimum_artifact_bytes, predict_artifact_bytes
from shaver.train.checkpoint import model_fingerprint
from test_pruning_util import DIM, FIELD_DIMS, TinyModel, random_ids, tiny_dataset

N = sum(FIELD_DIMS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


def make_attribution(model, dataset, seed=0, placeholder="codebook", **overrides):
    gen = torch.Generator().manual_seed(seed)
    phi = torch.randn(N, DIM, generator=gen)
    codebook = torch.randn(len(FIELD_DIMS), DIM, generator=gen) if placeholder == "codebook" \
        else torch.zeros(len(FIELD_DIMS), DIM)
    fields = dict(phi=phi, stderr=torch.zeros(N, DIM), count=10, codebook=codebook,
                  placeholder=placeholder, settings={}, model_fingerprint=model_fingerprint(model),
                  dataset_fingerprint=dataset.fingerprint, field_dims=FIELD_DIMS)
    fields.update(overrides)
    return Attribution(**fields)


def test_sparsity_zero_reproduces_the_base_model_exactly(dataset):
    model = TinyModel().eval()
    x = random_ids(200)
    with torch.no_grad():
        base = model(x)
    for order in ("abs", "signed"):
        for codebook in ("fixed", "refit"):
            (result,) = prune(model, make_attribution(model, dataset), [0.0], order=order,
                              codebook=codebook, dataset=dataset, evaluate=False)
            assert result.kept == result.total == N * DIM
            with torch.no_grad():
                assert torch.equal(result.model(x), base)
    with torch.no_grad():  # the base model is untouched
        assert torch.equal(model(x), base)
    assert isinstance(model.embedding, torch.nn.Embedding)


def test_one_sort_serves_every_budget_with_nested_masks(dataset):
    model = TinyModel().eval()
    attribution = make_attribution(model, dataset)
    budgets = [0.0, 0.2, 0.5, 0.8, 0.95, 1.0]
    results = prune(model, attribution, budgets, dataset=dataset, device="cpu", method="shaver")
    assert all(r.info["method"] == "shaver" and r.info["scorer"] == "shapley" for r in results)
    masks = [r.model.embedding.mask.numpy() for r in results]
    for bigger, smaller in zip(masks, masks[1:]):
        assert np.all(bigger >= smaller)
    assert [r.kept for r in results] == [Budget.sparsity(s).kept_entries(N * DIM)
                                         for s in budgets]
    phi = attribution.phi.numpy()
    for r, mask in zip(results, masks):
        if 0 < r.kept < r.total:
            assert np.abs(phi)[mask].min() >= np.abs(phi)[~mask].max()
        assert r.artifact_bytes == predict_artifact_bytes(
            model, mask, metadata={"feature_map": feature_map_of(str(dataset.path))})
        assert 0 <= r.metrics["auc"] <= 1 and r.metrics["logloss"] > 0
        assert r.info["dataset"]["fingerprint"] == dataset.fingerprint
        # pruned entries read the attribution's codebook
        eff = r.model.embedding.effective_weight()
        row_field = np.repeat(np.arange(len(FIELD_DIMS)), FIELD_DIMS)
        expected = np.where(mask, model.embedding.weight.detach().numpy(),
                            attribution.codebook.numpy()[row_field])
        assert np.array_equal(eff.detach().numpy(), expected)


def test_bytes_budget_is_the_largest_cut_that_fits(dataset):
    model = TinyModel().eval()
    pruner = Pruner(model, make_attribution(model, dataset))
    empty = minimum_artifact_bytes(model)
    full = predict_artifact_bytes(model, np.ones((N, DIM), bool))
    floor = min(empty, full)  # section headers can make a tiny all-pruned table the larger
    for limit in (empty, (empty + full) // 2, full - 1, full, full + 10):
        if limit < floor:
            continue
        result = pruner.cut(Budget.bytes_(limit))
        assert result.artifact_bytes <= limit
        if result.kept < result.total:
            assert predict_artifact_bytes(model, pruner.order.mask(result.kept + 1)) > limit
    with pytest.raises(BudgetError, match=f"minimum artifact size of {floor} bytes"):
        pruner.cut(Budget.bytes_(floor - 1))
    with pytest.raises(BudgetError, match="more entries than the table"):
        pruner.cut(Budget.params(N * DIM + 1))


def test_budgets_are_validated_before_any_work(dataset, monkeypatch):
    model = TinyModel().eval()
    with pytest.raises(BudgetError, match=r"\[0, 1\]"):
        prune(model, make_attribution(model, dataset), [0.5, 1.5])
    calls = []
    monkeypatch.setattr("shaver.pruning.api.masked_copy",
                        lambda *a: calls.append(a))  # no model is built before all resolve
    with pytest.raises(BudgetError, match="more entries than the table"):
        prune(model, make_attribution(model, dataset), [0.5, N * DIM + 1])
    with pytest.raises(BudgetError, match="minimum artifact size"):
        prune(model, make_attribution(model, dataset), [0.5, "10B"])
    assert calls == []


def test_fingerprint_mismatch(dataset, tmp_path):
    model = TinyModel().eval()
    other_model = TinyModel(seed=5).eval()
    with pytest.raises(FingerprintMismatch, match="computed for model"):
        prune(other_model, make_attribution(model, dataset), [0.5])
    other_data = tiny_dataset(tmp_path / "other", field_dims=[3, 4, 2], seed=1)
    moved = make_attribution(model, dataset, dataset_fingerprint="feedfacefeedface")
    with pytest.raises(FingerprintMismatch, match="computed on dataset"):
        prune(model, moved, [0.5], dataset=other_data)
    with pytest.raises(ScoreError, match="does not match the embedding"):
        prune(model, np.zeros((N + 1, DIM)), [0.5])


def test_nan_scores_are_refused(dataset):
    model = TinyModel().eval()
    attribution = make_attribution(model, dataset)
    attribution.phi[2, 1] = float("nan")
    with pytest.raises(ScoreError, match="NaN or infinite"):
        prune(model, attribution, [0.5])  # auto: checked before asking for validation
    scores = np.ones((N, DIM))
    scores[0, 0] = np.inf
    with pytest.raises(ScoreError, match="row 0, column 0"):
        prune(model, scores, [0.5])


def test_raw_scores_and_option_errors(dataset):
    model = TinyModel().eval()
    scores = np.arange(N * DIM, dtype=np.float32).reshape(N, DIM)
    (r,) = prune(model, scores, [3])
    assert r.kept == 3 and r.info["placeholder"] == "zero"
    assert r.model.embedding.mask.reshape(-1)[-3:].all()
    with pytest.raises(ScoreError, match="zero placeholder"):
        as_scores(model, scores, placeholder="codebook")
    with pytest.raises(ScoreError, match="needs id frequencies"):
        prune(model, scores, [0.5], codebook="refit")
    with pytest.raises(ScoreError, match="needs a dataset"):
        prune(model, scores, [0.5], finetune_config=FinetuneConfig())
    with pytest.raises(ShaverError, match="unknown codebook mode"):
        prune(model, scores, [0.5], codebook="kmeans")
    with pytest.raises(ScoreError, match="unknown order"):
        prune(model, scores, [0.5], order="random")


def test_evaluate_needs_a_dataset():
    model = TinyModel().eval()
    with pytest.raises(ScoreError, match="evaluate=True needs a dataset"):
        prune(model, np.ones((N, DIM)), [0.5], evaluate=True)


def test_byte_counts_match_the_exported_artifact(dataset, tmp_path):
    from shaver.models.registry import build_model
    from shaver.pruning.io import save_pruned

    model = build_model("deepfm", FIELD_DIMS, embed_dim=DIM).eval()
    scores = np.random.default_rng(0).standard_normal((N, DIM))
    meta = {"feature_map": feature_map_of(str(dataset.path))}
    middle = (minimum_artifact_bytes(model, metadata=meta)
              + predict_artifact_bytes(model, np.ones((N, DIM), bool), metadata=meta)) // 2
    for result in prune(model, scores, [0.0, 0.5, 0.9, Budget.bytes_(middle)], dataset=dataset):
        assert result.artifact_bytes <= middle or result.budget.kind != "bytes"
        info = {**result.info, "artifact_bytes": result.artifact_bytes}
        out = save_pruned(tmp_path / result.budget.label.replace("=", "-"), result.model, info)
        exported = export_artifact(out, tmp_path / f"{out.name}.shaver")
        assert exported.bytes == result.artifact_bytes == exported.path.stat().st_size
