"""Refinement: truncated walks in every engine path, survivor walks, exact values in the pruned
game, efficiency, the nested ranking, cost in proportion to the survivors, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shaver.attribution.estimator import make_engine
from shaver.attribution.estimator.common import bce
from shaver.attribution.exact import exact_sample_shapley
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import sample_permutations
from shaver.attribution.refine import (
    attribute_survivors,
    nested_ranking,
    refine,
    survivor_walks,
)
from shaver.errors import AttributionError
from shaver.table.mask import masked_copy
from test_attribution_helpers import MODEL_NAMES, any_model, quiet_attribute, tiny_dataset

torch.set_num_threads(2)


def _setup(name, dims=(3, 4, 2), seed=2):
    model = any_model(name, field_dims=list(dims), seed=3)
    gen = torch.Generator().manual_seed(seed)
    book = torch.randn(model.num_fields, model.embed_dim, generator=gen)
    offsets = torch.tensor([0, *dims[:-1]]).cumsum(0)
    x = torch.stack([torch.randint(0, d, (6,), generator=gen) for d in dims], 1) + offsets
    y = (torch.rand(6, generator=gen) < 0.5).float()
    return model, book, x, y


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_truncated_walks_are_the_first_steps_of_the_whole_walk(name, engine):
    model, book, x, y = _setup(name)
    eng = make_engine(engine, PlaceholderImputer(model, book))
    perm = sample_permutations(5, 0, len(x), model.num_fields * model.embed_dim)
    whole = eng.losses(x, y, perm)
    k = max(1, perm.shape[1] // 2)
    part = eng.losses(x, y, perm[:, :k])
    assert part.shape == (len(x), k + 1) and torch.allclose(part, whole[:, :k + 1], atol=1e-5)


def test_survivor_walks_put_survivors_first_in_their_order():
    perm = torch.tensor([[3, 0, 2, 1, 4], [4, 3, 2, 1, 0]])
    alive = torch.tensor([[True, False, True, False, False], [False, True, False, True, True]])
    walk = survivor_walks(perm, alive)
    assert walk.tolist() == [[0, 2, 3], [4, 3, 1]]
    counts = {}
    for k in range(3000):  # the survivors' order is uniform
        p = sample_permutations(1, k, 1, 5)
        key = tuple(survivor_walks(p, alive[:1])[0, :2].tolist())
        counts[key] = counts.get(key, 0) + 1
    assert set(counts) == {(0, 2), (2, 0)} and abs(counts[(0, 2)] - 1500) < 150


def _pruned(model, book, mask):
    return masked_copy(model, mask, book)


@pytest.mark.parametrize("name", ["deepfm", "dcn-mix"])
def test_survivor_credits_are_unbiased_in_the_pruned_game_and_efficient(name):
    model, book, x, y = _setup(name)
    x, y = x[:2], y[:2]
    n, d = model.embedding.weight.shape
    mask = np.random.default_rng(0).random((n, d)) < 0.5
    pruned = _pruned(model, book, mask)
    imputer = PlaceholderImputer(pruned, book)
    exact = exact_sample_shapley(imputer, x, y)  # pruned entries are null players there
    players = imputer.num_players
    entries = (x.unsqueeze(2) * d + torch.arange(d)).reshape(2, -1)
    alive = torch.from_numpy(mask.reshape(-1))[entries]
    assert torch.all(exact[~alive].abs() < 1e-6)
    eng = make_engine("fast", imputer)
    draws = 1500
    xs, ys = x.repeat(draws, 1), y.repeat(draws)
    walk = survivor_walks(sample_permutations(9, 0, len(xs), players), alive.repeat(draws, 1))
    losses = eng.losses(xs, ys, walk)
    credits = torch.zeros(len(xs), players).scatter_(1, walk, losses[:, 1:] - losses[:, :-1])
    gap = bce(imputer(xs, torch.zeros(len(xs), players, dtype=torch.bool)), ys) \
        - bce(imputer(xs, torch.ones(len(xs), players, dtype=torch.bool)), ys)
    assert torch.allclose(credits.sum(1), gap, atol=1e-5)  # efficiency per sample
    assert torch.all(credits[~alive.repeat(draws, 1)] == 0)
    c = credits.double().view(draws, 2, -1)
    err, se = (c.mean(0) - exact).abs(), c.std(0) / math.sqrt(draws)
    assert bool((err[alive] < 4.5 * se[alive] + 1e-6).all()), (err, se)


def test_attribute_survivors_costs_in_proportion_to_the_survivors(tmp_path):
    ds = tiny_dataset(tmp_path / "ds")
    model = any_model("deepfm")
    attr = quiet_attribute(model, ds, max_samples=32)
    n, d = model.embedding.weight.shape
    players = model.num_fields * d
    for share in (1.0, 0.3):
        mask = np.random.default_rng(1).random((n, d)) < share
        acc, record = attribute_survivors(_pruned(model, attr.codebook, mask), ds, mask,
                                          attr.codebook, samples=40, batch_size=8)
        assert record.samples == acc.count == 40 and record.kept == int(mask.sum())
        assert torch.all(acc.phi().view(n, d)[torch.from_numpy(~mask)] == 0)
        if share == 1.0:
            assert record.head_states == 40 * (players + 1)
        else:
            assert record.head_states < 0.8 * 40 * (players + 1)


def test_refine_nests_into_one_ranking(tmp_path):
    ds = tiny_dataset(tmp_path / "ds")
    model = any_model("deepfm")
    attr = quiet_attribute(model, ds, max_samples=32)
    out = refine(model, ds, attr, [0.5, 0.2], samples=24, batch_size=8)
    total = attr.phi.numel()
    assert out.values.shape == tuple(attr.phi.shape) and len(out.rounds) == 2
    assert [r.kept for r in out.rounds] == [round(0.5 * total), round(0.2 * total)]
    flat = out.values.reshape(-1)
    tiers = np.floor(flat)
    assert (tiers == 0).sum() == total - round(0.5 * total)
    assert (tiers == 2).sum() == round(0.2 * total)  # final survivors rank last
    assert out.rounds[1].head_states < out.rounds[0].head_states
    with pytest.raises(AttributionError, match="keep must be decreasing fractions"):
        refine(model, ds, attr, [0.2, 0.5], samples=8)
    with pytest.raises(AttributionError, match="one more round of values than cuts"):
        nested_ranking([attr.phi.numpy()], [np.ones(attr.phi.shape, bool)])


def test_nested_ranking_orders_within_and_across_rounds():
    phi0 = np.array([[4.0, 1.0, 3.0, 2.0]])
    phi1 = np.array([[-5.0, 0.0, 1.0, 0.0]])
    cut = np.array([[True, False, True, False]])
    scores = nested_ranking([phi0, phi1], [cut])
    order = np.argsort(scores.reshape(-1))
    assert order.tolist() == [1, 3, 2, 0]  # pruned by |phi0|, then survivors by |phi1|
