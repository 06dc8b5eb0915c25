"""prune(): the paper's fixed candidate (exact at sparsity 0, no validation, no calibration,
sort-once nested cuts, the largest byte cut), budgets checked before any work, bad input,
fine-tuning, exact byte counts and the results row."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from shaver.attribution.result import Attribution
from shaver.data.feature_map import feature_map_of
from shaver.data.store import write_prepared
from shaver.deploy.artifact import export_artifact
from shaver.errors import BudgetError, FingerprintMismatch, ShaverError
from shaver.models.base import calibration_of
from shaver.models.registry import build_model
from shaver.pruning import chooser as chooser_module
from shaver.pruning.api import PruneResult, as_scores, prune
from shaver.pruning.finetune import FinetuneConfig
from shaver.pruning.io import load_pruned, save_pruned
from shaver.pruning.runner import COLUMNS
from shaver.table.budget import Budget
from shaver.table.order import PruneOrder, ScoreError
from shaver.table.size import predict_artifact_bytes
from shaver.train.checkpoint import model_fingerprint
from test_pruning_util import DIM, FIELD_DIMS, TinyModel, random_ids, tiny_dataset

N = sum(FIELD_DIMS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


@pytest.fixture(scope="module")
def meta(dataset):
    return {"feature_map": feature_map_of(str(dataset.path))}


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


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_sparsity_zero_reproduces_the_base_model_exactly(dataset):
    model = TinyModel().eval()
    x = random_ids(200)
    with torch.no_grad():
        base = model(x)
    for order in ("abs", "signed"):
        for codebook in ("fixed", "refit"):
            (result,) = prune(model, make_attribution(model, dataset), [0.0], order=order,
                              codebook=codebook, dataset=dataset, evaluate=False)
            assert result.info["method"] == "shaver"  # order/codebook: the paper's method
            assert result.kept == result.total == N * DIM
            assert calibration_of(result.model) is None
            with torch.no_grad():
                assert torch.equal(result.model(x), base)
    (result,) = prune(model, make_attribution(model, dataset), [0.0], method="shaver")
    with torch.no_grad():
        assert torch.equal(result.model(x), base)
    with torch.no_grad():  # the base model is untouched
        assert torch.equal(model(x), base)
    assert isinstance(model.embedding, torch.nn.Embedding)


def test_the_papers_cut_skips_validation_and_calibration(dataset, tmp_path, monkeypatch):
    model = TinyModel().eval()
    attribution = make_attribution(model, dataset)

    def forbidden(*args, **kwargs):
        raise AssertionError("the paper's cut must not look at validation")

    monkeypatch.setattr(chooser_module, "source_logits", forbidden)
    monkeypatch.setattr(chooser_module, "fit_logit_calibration", forbidden)
    results = prune(model, attribution, [0.5, "6000B", "1/2"], method="shaver",
                    dataset=dataset)
    for r in results:
        assert r.info["method"] == "shaver" and r.info["candidate"] == "shaver"
        assert r.info["winner"] is None and r.row()["winner"] is None
        assert "selection" not in r.info and "val_metrics" not in r.info
        assert "calibration" not in r.info and calibration_of(r.model) is None
        assert not r.row()["calibrated"]
        assert r.info["plan"] == "fp32/entry" and r.info["head_dtype"] == "fp32"
        assert r.info["scorer"] == "shapley" and r.info["placeholder"] == "codebook"
        assert 0 <= r.metrics["auc"] <= 1  # test metrics still reported
    # nor does it need a validation split
    ids, labels = np.asarray(dataset.ids("train")), np.asarray(dataset.labels("train"))
    no_val = write_prepared(
        tmp_path / "noval", field_names=[f"f{i}" for i in range(len(FIELD_DIMS))],
        vocabularies={f"f{i}": [f"v{j}" for j in range(d)] for i, d in enumerate(FIELD_DIMS)},
        splits={"train": (ids, labels, np.arange(len(ids))),
                "val": (ids[:0], labels[:0], np.arange(0)),
                "test": (ids, labels, np.arange(len(ids)))},
        frequencies=np.bincount(ids.reshape(-1), minlength=N))
    moved = make_attribution(model, dataset, dataset_fingerprint=None)
    (r,) = prune(model, moved, [0.5], method="shaver", dataset=no_val)
    assert np.array_equal(r.model.embedding.mask.numpy(),
                          results[0].model.embedding.mask.numpy())


def test_one_sort_serves_every_budget_with_nested_masks(dataset, meta):
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
        assert r.artifact_bytes == predict_artifact_bytes(model, mask, metadata=meta)
        assert 0 <= r.metrics["auc"] <= 1 and r.metrics["logloss"] > 0
        assert r.info["dataset"]["fingerprint"] == dataset.fingerprint
        # pruned entries read the attribution's codebook
        eff = r.model.embedding.effective_weight()
        row_field = np.repeat(np.arange(len(FIELD_DIMS)), FIELD_DIMS)
        expected = np.where(mask, model.embedding.weight.detach().numpy(),
                            attribution.codebook.numpy()[row_field])
        assert np.array_equal(eff.detach().numpy(), expected)


def test_a_byte_budget_is_the_largest_cut_that_fits(dataset, meta):
    model = TinyModel().eval()
    attribution = make_attribution(model, dataset)
    order = PruneOrder(attribution.phi.numpy(), "abs")
    empty = predict_artifact_bytes(model, order.mask(0), metadata=meta)
    full = predict_artifact_bytes(model, order.mask(N * DIM), metadata=meta)
    floor = min(empty, full)  # section headers can make a tiny all-pruned table the larger
    for limit in (empty, (empty + full) // 2, full - 1, full, full + 10):
        if limit < floor:
            continue
        (result,) = prune(model, attribution, [Budget.bytes_(limit)], method="shaver",
                          dataset=dataset, evaluate=False)
        assert result.artifact_bytes <= limit
        if result.kept < result.total:
            assert predict_artifact_bytes(model, order.mask(result.kept + 1), metadata=meta) \
                > limit
    with pytest.raises(BudgetError) as info:
        prune(model, attribution, [Budget.bytes_(floor - 1)], method="shaver", dataset=dataset)
    assert str(info.value) == (f"budget bytes={floor - 1} is below the smallest artifact this "
                               f"model can have at the allowed precisions ({floor} bytes, head "
                               f"fp32)")


@pytest.mark.parametrize("method", ["auto", "shaver"])
def test_budgets_are_validated_before_any_work(dataset, monkeypatch, method):
    model = TinyModel().eval()
    attribution = make_attribution(model, dataset)
    calls = []
    real = chooser_module.Chooser.choose
    monkeypatch.setattr(chooser_module.Chooser, "choose",
                        lambda self, *a: calls.append(a) or real(self, *a))
    bad = [([0.5, 1.5], "sparsity must be a fraction in [0, 1], got 1.5"),
           ([0.5, N * DIM + 1], f"budget params={N * DIM + 1} keeps more entries than the "
                                f"table holds ({N * DIM})"),
           ([0.5, "10B"], "budget bytes=10 is below the smallest artifact"),
           ([0.5, "table_bytes=1"], "budget table_bytes=1 is below the smallest table"),
           (["1/1024"], "budget table_bytes=1/1024 is below the smallest table")]
    for budgets, message in bad:
        with pytest.raises(BudgetError) as info:
            prune(model, attribution, budgets, method=method, dataset=dataset)
        assert str(info.value).startswith(message)
    assert calls == []  # nothing was cut before the bad budget was found


def test_fingerprint_mismatch(dataset, tmp_path):
    model = TinyModel().eval()
    other_model = TinyModel(seed=5).eval()
    with pytest.raises(FingerprintMismatch) as info:
        prune(other_model, make_attribution(model, dataset), [0.5], dataset=dataset)
    assert str(info.value) == (f"the shapley scores were computed for model "
                               f"{model_fingerprint(model)}, but this model's fingerprint is "
                               f"{model_fingerprint(other_model)} (another run?)")
    other_data = tiny_dataset(tmp_path / "other", field_dims=[3, 4, 2], seed=1)
    moved = make_attribution(model, dataset, dataset_fingerprint="feedfacefeedface")
    with pytest.raises(FingerprintMismatch) as info:
        prune(model, moved, [0.5], dataset=other_data)
    assert str(info.value) == (f"the shapley scores were computed on dataset feedfacefeedface, "
                               f"but {other_data.path} has fingerprint {other_data.fingerprint}")
    with pytest.raises(ScoreError, match="does not match the embedding"):
        prune(model, np.zeros((N + 1, DIM)), [0.5])


def test_nan_scores_are_refused(dataset):
    model = TinyModel().eval()
    attribution = make_attribution(model, dataset)
    attribution.phi[2, 1] = float("nan")
    with pytest.raises(ScoreError, match="NaN or infinite"):
        prune(model, attribution, [0.5])  # auto: checked before asking for validation
    with pytest.raises(ScoreError, match="NaN or infinite"):
        prune(model, attribution, ["1/2"], dataset=dataset)
    scores = np.ones((N, DIM))
    scores[0, 0] = np.inf
    with pytest.raises(ScoreError, match="row 0, column 0"):
        prune(model, scores, [0.5])


def test_raw_scores_and_option_errors(dataset):
    model = TinyModel().eval()
    scores = np.arange(N * DIM, dtype=np.float32).reshape(N, DIM)
    (r,) = prune(model, scores, [3])
    assert r.kept == 3 and r.info["placeholder"] == "zero" and r.info["method"] == "scores"
    assert r.info["candidate"] == "custom" and r.info["winner"] is None
    assert r.model.embedding.mask.reshape(-1)[-3:].all()
    with pytest.raises(ScoreError, match="zero placeholder"):
        as_scores(model, scores, placeholder="codebook")
    with pytest.raises(ScoreError, match="method 'scores' with codebook 'refit' needs id "
                                         "frequencies or a dataset"):
        prune(model, scores, [0.5], codebook="refit")
    with pytest.raises(ScoreError, match="needs a dataset"):
        prune(model, scores, [0.5], finetune_config=FinetuneConfig())
    with pytest.raises(ShaverError, match="unknown codebook mode"):
        prune(model, scores, [0.5], codebook="kmeans")
    with pytest.raises(ScoreError, match="unknown order"):
        prune(model, scores, [0.5], order="random")
    with pytest.raises(ScoreError, match="unknown method 'best'"):
        prune(model, scores, [0.5], method="best")
    attribution = make_attribution(model, dataset)
    with pytest.raises(ScoreError, match="method 'auto' chooses the order and codebook"):
        prune(model, attribution, [0.5], dataset=dataset, method="auto", order="signed")
    with pytest.raises(ScoreError, match="method 'shaver' needs an Attribution"):
        prune(model, np.zeros((N, DIM)), [0.5], method="shaver")


def test_evaluate_needs_a_dataset():
    model = TinyModel().eval()
    with pytest.raises(ScoreError, match="evaluate=True needs a dataset"):
        prune(model, np.ones((N, DIM)), [0.5], evaluate=True)


def test_finetuning_keeps_the_chosen_plan_and_records_it(dataset):
    model = TinyModel().eval()
    attribution = make_attribution(model, dataset)
    config = FinetuneConfig(epochs=2, lr=0.05, batch_size=64, patience=None)
    plain = prune(model, attribution, [0.5, "1/2"], dataset=dataset)
    tuned = prune(model, attribution, [0.5, "1/2"], dataset=dataset, finetune_config=config)
    for p, r in zip(plain, tuned):  # the same plan is chosen; fine-tuning keeps its tier map
        assert r.info["finetuned"] is True and r.row()["finetuned"] is True
        assert r.info["finetune"] == config.to_json() and r.row()["finetune_epochs"] == 2
        assert 0 <= r.row()["finetune_best_epoch"] <= 2
        assert (r.info["plan"], r.info["head_dtype"]) == (p.info["plan"], p.info["head_dtype"])
        assert torch.equal(p.model.embedding.tier_map, r.model.embedding.tier_map)
        assert r.artifact_bytes == p.artifact_bytes
        emb = r.model.embedding
        assert torch.all(emb.weight[~emb.mask] == 0)  # pruned entries still read the codebook


def test_byte_counts_match_the_exported_artifact(dataset, meta, tmp_path):
    model = build_model("deepfm", FIELD_DIMS, embed_dim=DIM, mlp_dims=[8]).eval()
    scores = np.random.default_rng(0).standard_normal((N, DIM))
    middle = (predict_artifact_bytes(model, np.zeros((N, DIM), bool), metadata=meta)
              + predict_artifact_bytes(model, np.ones((N, DIM), bool), metadata=meta)) // 2
    results = prune(model, scores, [0.0, 0.5, 0.9, Budget.bytes_(middle), "1/2"],
                    dataset=dataset, families=None)
    for result in results:
        if result.budget.kind == "bytes":
            assert result.artifact_bytes <= middle
        direct = export_artifact(result, tmp_path / "direct.shaver")
        assert direct.bytes == result.artifact_bytes == direct.path.stat().st_size
        out = save_pruned(tmp_path / result.budget.label.replace("=", "-").replace("/", "of"),
                          result.model, result.info)
        assert load_pruned(out).info["artifact_bytes"] == result.artifact_bytes
        via_dir = export_artifact(out, tmp_path / f"{out.name}.shaver")
        assert sha(via_dir.path) == sha(direct.path)  # a cut and its directory: one file


def test_the_results_row_has_every_column():
    model = TinyModel().eval()
    (r,) = prune(model, np.ones((N, DIM)), [Budget.table_bytes("1/2")])
    assert isinstance(r, PruneResult)
    row = r.row()
    assert set(row) | {"path"} == set(COLUMNS)
    assert row["budget"] == "table_bytes=1/2" and row["sparsity"] == 1 - r.kept / r.total
    assert row["table_bytes"] <= N * DIM * 4 // 2 and row["artifact_bytes"] == r.artifact_bytes
    assert row["auc"] is None and row["method"] == "scores" and row["plan"] == "fp32/entry"
