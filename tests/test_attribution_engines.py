"""Engines: fast == reference on identical permutations, efficiency, exact oracle, permutations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from shaver.attribution.estimator import entry_credits, make_engine
from shaver.attribution.estimator.common import bce
from shaver.attribution.estimator.fast import FastEngine
from shaver.attribution.exact import exact_sample_shapley, exact_shapley
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import sample_permutations
from shaver.attribution.runner import batch_credits
from shaver.errors import AttributionError
from shaver.models.deepfm import DeepFM
from test_attribution_helpers import DEVICES, DIMS, MODEL_NAMES, TanhNet, any_model

torch.set_num_threads(2)


def _batch(batch=12, dims=DIMS, seed=1, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, *dims[:-1]]).cumsum(0)
    x = torch.stack([torch.randint(0, d, (batch,), generator=gen) for d in dims], 1) + offsets
    y = (torch.rand(batch, generator=gen) < 0.5).float()
    return x.to(device), y.to(device)


def _imputer(model, device, seed=2):
    gen = torch.Generator().manual_seed(seed)
    book = torch.randn(model.num_fields, model.embed_dim, generator=gen)
    return PlaceholderImputer(model.to(device), book)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fast_equals_reference_on_identical_permutations(name, device):
    model = any_model(name)
    imputer = _imputer(model, device)
    x, y = _batch(device=device)
    perm = sample_permutations(5, 0, len(x), imputer.num_players, device)
    ref = entry_credits(make_engine("reference", imputer).losses(x, y, perm), perm)
    fast_engine = make_engine("fast", imputer, max_rows=40)  # several chunks
    fast = entry_credits(fast_engine.losses(x, y, perm), perm)
    assert torch.allclose(fast, ref, atol=2e-5, rtol=1e-4), (fast - ref).abs().max()
    expected = {"fm": "fm-mlp", "deepfm": "fm-mlp", "dcn-v2": "cross", "dcn-mix": "cross"}
    assert fast_engine.path_name == expected.get(name, "generic")


@pytest.mark.parametrize("name", ["dcn-v2", "dcn-mix"])
def test_cross_path_parallel_structure_equals_reference(name):
    from shaver.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(name, DIMS, embed_dim=2, mlp_dims=[6, 5], structure="parallel").eval()
    imputer = _imputer(model, "cpu")
    x, y = _batch()
    perm = sample_permutations(2, 0, len(x), imputer.num_players)
    engine = make_engine("fast", imputer)
    fast = entry_credits(engine.losses(x, y, perm), perm)
    ref = entry_credits(make_engine("reference", imputer).losses(x, y, perm), perm)
    assert engine.path_name == "cross" and torch.allclose(fast, ref, atol=2e-5)


@pytest.mark.parametrize("structure", ["stacked", "parallel"])
def test_cross_path_identity_gate_equals_reference(structure):
    """The Shaver authors' DCN-Mix (gate = identity, not softmax) keeps the fast path."""
    from shaver.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("dcn-mix", DIMS, embed_dim=2, mlp_dims=[6, 5], structure=structure,
                        gate="identity", num_experts=3, rank=2).eval()
    imputer = _imputer(model, "cpu")
    x, y = _batch()
    perm = sample_permutations(3, 0, len(x), imputer.num_players)
    engine = make_engine("fast", imputer, max_rows=30)
    fast = entry_credits(engine.losses(x, y, perm), perm)
    ref = entry_credits(make_engine("reference", imputer).losses(x, y, perm), perm)
    assert engine.path_name == "cross" and torch.allclose(fast, ref, atol=2e-5)


class ShiftedDeepFM(DeepFM):
    """Looks like a DeepFM, but its head adds a term the fast path does not know."""

    def head(self, emb, x):
        return super().head(emb, x) + emb[:, 0, 0] ** 2


def test_fast_path_falls_back_to_generic_when_head_differs():
    model = ShiftedDeepFM(DIMS, embed_dim=2, mlp_dims=[4]).eval()
    imputer = _imputer(model, "cpu")
    x, y = _batch()
    perm = sample_permutations(0, 0, len(x), imputer.num_players)
    engine = FastEngine(imputer)
    fast = entry_credits(engine.losses(x, y, perm), perm)
    ref = entry_credits(make_engine("reference", imputer).losses(x, y, perm), perm)
    assert engine.path_name == "generic"
    assert torch.allclose(fast, ref, atol=2e-5)


@pytest.mark.parametrize("antithetic", [False, True])
@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_efficiency_credits_sum_to_the_full_gap(name, engine, antithetic):
    model = any_model(name)
    imputer = _imputer(model, "cpu")
    x, y = _batch()
    perm = sample_permutations(3, 0, len(x), imputer.num_players)
    credits, walks = batch_credits(make_engine(engine, imputer), x, y, perm, antithetic)
    assert torch.allclose(sum(w * c for c, _, w in walks), credits, atol=1e-6)
    keep = torch.ones(len(x), imputer.num_players, dtype=torch.bool)
    gap = bce(imputer(x, ~keep), y) - bce(imputer(x, keep), y)
    assert torch.allclose(credits.sum(1), gap, atol=1e-5)


def test_permutations_are_a_function_of_seed_and_index():
    whole = sample_permutations(7, 0, 300, 10)
    assert torch.equal(sample_permutations(7, 37, 150, 10), whole[37:187])
    assert torch.equal(sample_permutations(7, 299, 1, 10), whole[299:])
    assert torch.equal(whole.sort(1).values, torch.arange(10).expand(300, 10))
    assert not torch.equal(sample_permutations(8, 0, 300, 10), whole)
    assert sample_permutations(7, 5, 0, 10).shape == (0, 10)


def test_permutations_are_uniform():
    perms = sample_permutations(1, 0, 6000, 3)
    counts = {}
    for row in perms.tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert len(counts) == 6
    # 1000 expected per order; 5 sigma of a binomial(6000, 1/6) is about 144
    assert all(abs(c - 1000) < 150 for c in counts.values()), counts


@pytest.mark.parametrize("name", ["deepfm", "tanh-net"])
def test_exact_equals_mean_over_all_permutations(name):
    dims = [3, 2]
    model = any_model(name, field_dims=dims)
    imputer = _imputer(model, "cpu")
    x, y = _batch(batch=3, dims=dims)
    players = imputer.num_players
    every = torch.tensor(list(itertools.permutations(range(players))))
    engine = make_engine("reference", imputer)
    total = torch.zeros(3, players, dtype=torch.float64)
    for perm in every:
        perms = perm.expand(3, players)
        total += entry_credits(engine.losses(x, y, perms), perms).double()
    exact = exact_sample_shapley(imputer, x, y)
    assert torch.allclose(total / len(every), exact, atol=1e-5)


def test_exact_refuses_large_games_and_credits_global_rows():
    model = any_model("fm", field_dims=[3, 4, 2], embed_dim=5)
    with pytest.raises(AttributionError, match="m\\*d <= 12"):
        exact_sample_shapley(_imputer(model, "cpu"), *_batch(batch=1))
    model = any_model("deepfm", field_dims=[3, 4, 2], embed_dim=2)
    imputer = _imputer(model, "cpu")
    x, y = _batch(batch=5)
    phi = exact_shapley(imputer, x, y, model.num_features)
    unused = sorted(set(range(model.num_features)) - set(x.unique().tolist()))
    assert unused and torch.all(phi[unused] == 0)
    per_sample = exact_sample_shapley(imputer, x, y)
    assert math.isclose(float(phi.sum()), float(per_sample.sum() / 5), abs_tol=1e-9)


@pytest.mark.parametrize("name", ["deepfm", "dcn-mix"])
def test_estimator_converges_to_exact_shapley(name):
    """Mean credit over many permutations is within 4.5 standard errors of the exact value."""
    model = any_model(name, seed=3)
    imputer = _imputer(model, "cpu")
    x, y = _batch(batch=2)
    draws = 1500
    xs, ys = x.repeat(draws, 1), y.repeat(draws)
    perm = sample_permutations(11, 0, len(xs), imputer.num_players)
    credits = entry_credits(make_engine("fast", imputer).losses(xs, ys, perm), perm).double()
    credits = credits.view(draws, 2, -1)
    mean, se = credits.mean(0), credits.std(0) / math.sqrt(draws)
    exact = exact_sample_shapley(imputer, x, y)
    z = (mean - exact).abs() / (se + 1e-9)
    assert float(z.max()) < 4.5, z.max()
    assert float((mean - exact).abs().max()) > 0  # estimates, not the exact values themselves


def test_bf16_ranks_like_fp32():
    model = any_model("deepfm", field_dims=[30, 40, 20], embed_dim=4)
    imputer = _imputer(model, "cpu")
    x, y = _batch(batch=64, dims=[30, 40, 20])
    perm = sample_permutations(0, 0, len(x), imputer.num_players)
    full = entry_credits(make_engine("fast", imputer).losses(x, y, perm), perm).mean(0)
    half = entry_credits(make_engine("fast", imputer, dtype="bf16").losses(x, y, perm), perm)
    half = half.mean(0)
    ranks = [v.argsort().argsort().double() for v in (full, half)]
    spearman = torch.corrcoef(torch.stack(ranks))[0, 1]
    assert spearman > 0.95
    with pytest.raises(AttributionError, match="dtype"):
        make_engine("fast", imputer, dtype="fp8")
    with pytest.raises(AttributionError, match="engine"):
        make_engine("turbo", imputer)


@pytest.mark.parametrize("name", ["deepfm", "dcn-mix"])
def test_int8_ranks_like_fp32(name):
    from shaver.attribution.estimator.mlp import int8_available

    if not int8_available(torch.device("cpu")):
        pytest.skip("no int8 quantized engine in this torch build")
    dims = [30, 40, 20]
    model = any_model(name, field_dims=dims, embed_dim=4)
    imputer = _imputer(model, "cpu")
    x, y = _batch(batch=64, dims=dims)
    perm = sample_permutations(0, 0, len(x), imputer.num_players)
    full_losses = make_engine("fast", imputer).losses(x, y, perm)
    int8_engine = make_engine("fast", imputer, dtype="int8")
    int8_losses = int8_engine.losses(x, y, perm)
    assert int8_engine.dtype_used == "int8" and int8_engine.int8_agreement >= 0.9
    assert any(layer.packed is not None for layer in int8_engine.path.mlp.layers)
    assert not torch.equal(full_losses, int8_losses)
    relative = (full_losses - int8_losses).abs() / (1 + full_losses.abs())
    assert float(relative.max()) < 0.1
    full = entry_credits(full_losses, perm).mean(0)
    low = entry_credits(int8_losses, perm).mean(0)
    ranks = [v.argsort().argsort().double() for v in (full, low)]
    assert torch.corrcoef(torch.stack(ranks))[0, 1] > 0.9


def test_int8_stays_fp32_where_it_disagrees(monkeypatch, caplog):
    from shaver.attribution.estimator import fast

    monkeypatch.setattr(fast, "INT8_MIN_CORR", 1.01)  # no int8 result can agree this much
    model = any_model("deepfm", field_dims=[30, 40, 20], embed_dim=4)
    imputer = _imputer(model, "cpu")
    x, y = _batch(batch=8, dims=[30, 40, 20])
    perm = sample_permutations(0, 0, len(x), imputer.num_players)
    engine = make_engine("fast", imputer, dtype="int8")
    with caplog.at_level("WARNING"):
        losses = engine.losses(x, y, perm)
    assert engine.dtype_used == "fp32" and "stays in fp32" in caplog.text
    assert torch.equal(losses, make_engine("fast", imputer).losses(x, y, perm))


def test_int8_without_mlp_layers_stays_fp32():
    imputer = _imputer(any_model("fm"), "cpu")  # FM: nothing to quantise
    x, y = _batch(batch=8)
    perm = sample_permutations(0, 0, len(x), imputer.num_players)
    engine = make_engine("fast", imputer, dtype="int8")
    losses = engine.losses(x, y, perm)
    assert engine.dtype_used == "fp32"
    assert torch.equal(losses, make_engine("fast", imputer).losses(x, y, perm))


def test_int8_refused_where_it_cannot_run():
    model = any_model("deepfm")
    imputer = _imputer(model, "cpu")
    with pytest.raises(AttributionError, match="reference loop runs fp32 or bf16"):
        make_engine("reference", imputer, dtype="int8")
    plain = _imputer(TanhNet(DIMS, embed_dim=2), "cpu")
    with pytest.raises(AttributionError, match="needs a model-specific fast path"):
        make_engine("fast", plain, dtype="int8")
