"""Scorers under one interface, the refit codebook formula, and fine-tuning with a fixed mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shaver.pruning.api import prune
from shaver.pruning.codebook import refit_codebook
from shaver.pruning.finetune import FinetuneConfig, finetune
from shaver.pruning.scorers import compute_scores, data_frequencies
from shaver.table.order import ScoreError
from test_pruning_util import DIM, FIELD_DIMS, TinyModel, tiny_dataset

N = sum(FIELD_DIMS)
ROW_FIELD = np.repeat(np.arange(len(FIELD_DIMS)), FIELD_DIMS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds")


def test_magnitude_and_random(dataset):
    model = TinyModel().eval()
    w = model.embedding.weight.detach().numpy()
    mag = compute_scores("magnitude", model)
    assert mag.placeholder == "zero" and np.array_equal(mag.values, np.abs(w))
    mag_cb = compute_scores("magnitude", model, placeholder="codebook", dataset=dataset)
    assert np.allclose(mag_cb.values, np.abs(w - mag_cb.codebook.numpy()[ROW_FIELD]))
    a = compute_scores("random", model, seed=3).values
    assert np.array_equal(a, compute_scores("random", model, seed=3).values)
    assert not np.array_equal(a, compute_scores("random", model, seed=4).values)


def test_taylor_is_gradient_times_change_of_the_mean_loss(dataset):
    model = TinyModel().eval()
    scores = compute_scores("taylor", model, dataset=dataset, batch_size=64, device="auto")
    x, y = dataset.arrays("train+val")
    w = model.embedding.weight
    loss = F.binary_cross_entropy_with_logits(model(torch.from_numpy(x)), torch.from_numpy(y))
    (g,) = torch.autograd.grad(loss, w)
    expected = (g * (0 - w)).detach().numpy()
    np.testing.assert_allclose(scores.values, expected, rtol=1e-4, atol=1e-7)
    assert w.grad is None  # the model's own gradients are untouched
    assert scores.dataset_fingerprint == dataset.fingerprint


def test_scorer_errors(dataset):
    model = TinyModel().eval()
    with pytest.raises(ScoreError, match="unknown scorer 'l2'"):
        compute_scores("l2", model)
    with pytest.raises(ScoreError, match="needs an attribution"):
        compute_scores("shapley", model)
    with pytest.raises(ScoreError, match="needs a dataset"):
        compute_scores("taylor", model)
    with pytest.raises(ScoreError, match="needs id frequencies"):
        compute_scores("magnitude", model, placeholder="codebook")
    with pytest.raises(ScoreError, match="placeholder must be one of"):
        compute_scores("magnitude", model, placeholder="mean")


def test_frequencies_count_the_requested_splits(dataset):
    x, _ = dataset.arrays("train+val")
    assert np.array_equal(data_frequencies(dataset, "train+val", batch_size=7),
                          np.bincount(x.reshape(-1), minlength=N))
    assert np.array_equal(data_frequencies(dataset, "train"), dataset.frequencies)


def test_refit_codebook_matches_the_brute_force_formula():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((N, DIM)).astype(np.float32)
    mask = rng.random((N, DIM)) < 0.5
    mask[0:3, 0] = True  # field 0, column 0: nothing pruned -> fixed value stays
    mask[3:7, 1] = [False, True, False, True]  # field 1, column 1: pruned rows 3 and 5 ...
    freq = rng.integers(1, 5, N)
    freq[[3, 5]] = 0  # ... never seen -> plain mean of the pruned entries
    fixed = rng.standard_normal((3, DIM)).astype(np.float32)
    got = refit_codebook(torch.from_numpy(w), mask, FIELD_DIMS, freq, fixed).numpy()
    for f in range(3):
        rows = np.flatnonzero(ROW_FIELD == f)
        for k in range(DIM):
            pr = [r for r in rows if not mask[r, k]]
            if not pr:
                want = fixed[f, k]
            elif sum(freq[r] for r in pr) == 0:
                want = np.mean([w[r, k] for r in pr])
            else:
                want = sum(freq[r] * w[r, k] for r in pr) / sum(freq[r] for r in pr)
            assert got[f, k] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert got[0, 0] == fixed[0, 0]
    assert got[1, 1] == pytest.approx((w[3, 1] + w[5, 1]) / 2)
    with pytest.raises(Exception, match="disagree"):
        refit_codebook(w, mask, FIELD_DIMS, freq[:-1], fixed)


def test_refit_never_increases_the_weighted_distortion(dataset):
    model = TinyModel().eval()
    freq = data_frequencies(dataset)
    mag = compute_scores("magnitude", model, placeholder="codebook", dataset=dataset)
    w = model.embedding.weight.detach().numpy()
    for budget in (0.3, 0.7, 0.95):
        fixed, refit = (prune(model, mag, [budget], codebook=mode, frequencies=freq)[0]
                        for mode in ("fixed", "refit"))
        assert refit.info["codebook"] == "refit"

        def distortion(result):
            eff = result.model.embedding.effective_weight().detach().numpy()
            return float((freq[:, None] * (eff - w) ** 2).sum())

        assert distortion(refit) <= distortion(fixed) + 1e-6


def test_finetune_keeps_pruned_entries_fixed_and_trains_kept_ones(dataset):
    model = TinyModel().eval()
    (result,) = prune(model, compute_scores("magnitude", model), [0.6], evaluate=False)
    emb = result.model.embedding
    before = emb.weight.detach().clone()
    config = FinetuneConfig(epochs=2, lr=0.05, weight_decay=1e-3, batch_size=32, patience=None)
    tuned, record = finetune(result.model, dataset, config, device="cpu")
    assert record["best_epoch"] >= 1 and record["epochs_run"] == 2
    out, mask = tuned.embedding, emb.mask
    assert torch.equal(out.mask, mask) and torch.equal(out.codebook, emb.codebook)
    assert torch.equal(out.weight.detach()[~mask], torch.zeros(int((~mask).sum())))
    assert not torch.equal(out.weight.detach()[mask], before[mask])
    assert torch.equal(emb.weight.detach(), before)  # the plan given is left as it was
    assert not tuned.training
    with pytest.raises(Exception, match="expects a plan"):
        finetune(TinyModel(), dataset, config)


def test_prune_with_finetuning_records_it(dataset):
    from shaver.train import loop

    model = TinyModel().eval()
    scores = compute_scores("magnitude", model)
    config = FinetuneConfig(epochs=1, lr=0.05, batch_size=64, patience=None)
    (plain,) = prune(model, scores, [0.5], dataset=dataset)
    (result,) = prune(model, scores, [0.5], dataset=dataset, finetune_config=config)
    assert result.info["finetuned"] is True and result.info["finetune"]["epochs"] == 1
    assert result.row()["finetuned"] is True and plain.row()["finetuned"] is False
    emb, base = result.model.embedding, plain.model.embedding
    assert torch.equal(emb.mask, base.mask)  # the same cut, trained
    assert not torch.equal(emb.weight[emb.mask], base.weight[base.mask])
    test = loop.evaluate(result.model, dataset, "test", device="cpu")  # the tuned model's
    assert result.metrics == {"auc": float(test["auc"]), "logloss": float(test["logloss"])}


def test_scores_and_attribution_consistency_errors(dataset, tmp_path):
    from shaver.attribution.result import Attribution
    from shaver.pruning.api import as_scores
    from shaver.pruning.scorers import Scores

    model = TinyModel().eval()
    with pytest.raises(ScoreError, match="placeholder must be one of"):
        Scores(np.zeros((N, DIM)), "custom", "mean", torch.zeros(3, DIM))
    with pytest.raises(ScoreError, match="does not fit scores"):
        Scores(np.zeros((N, DIM)), "custom", "zero", torch.zeros(3, DIM + 1))
    with pytest.raises(ScoreError, match="codebook has 2 fields"):
        as_scores(model, Scores(np.zeros((N, DIM)), "custom", "zero", torch.zeros(2, DIM)))
    zero = Attribution(phi=torch.zeros(N, DIM), stderr=torch.zeros(N, DIM), count=1,
                       codebook=torch.zeros(3, DIM), placeholder="zero", field_dims=FIELD_DIMS)
    with pytest.raises(ScoreError, match="computed with placeholder 'zero'"):
        compute_scores("shapley", model, attribution=zero, placeholder="codebook")
    empty = tiny_dataset(tmp_path / "empty", rows=2)  # 60/20/20 % of 2 rows: val is empty
    with pytest.raises(ScoreError, match="no rows to score on"):
        compute_scores("taylor", model, dataset=empty, data="val")
