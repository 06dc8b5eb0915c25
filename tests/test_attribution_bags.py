"""Attribution with bags (multi-valued fields): the game of the imputer module's docstring.

Players are the table's entries a sample looks up; a removed entry takes its field's
placeholder inside the bag and keeps its coefficient; a repeated id is one player; pads and
zero-coefficient slots are null players. Checked against an exact enumeration written here
from the raw (unmerged) rows, independently of the imputer.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from attribution_bag_data import BAG_LAYOUT, BAG_MODELS, bag_batch, bag_model, write_bag_dataset
from shaver.attribution.api import attribute
from shaver.attribution.estimator import entry_credits, make_engine
from shaver.attribution.estimator.common import bce, global_entries
from shaver.attribution.estimator.paths import GenericPath
from shaver.attribution.exact import MAX_PLAYERS, exact_sample_shapley, exact_shapley
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import real_first, sample_permutations
from shaver.attribution.refine import attribute_survivors
from shaver.attribution.runner import batch_credits
from shaver.attribution.slots import slot_leaders
from shaver.errors import AttributionError
from shaver.table.mask import masked_copy

torch.set_num_threads(2)
EXPECTED_PATH = {"fm": "fm-mlp", "deepfm": "fm-mlp", "dcn-v2": "cross", "dcn-mix": "cross",
                 "lr": "generic"}


def _imputer(model, seed=2):
    gen = torch.Generator().manual_seed(seed)
    book = torch.randn(model.num_fields, model.embed_dim, generator=gen)
    return PlaceholderImputer(model, book)


def _exact_bag_shapley(model, book, x_raw, y, w_raw):
    """Exact Shapley values of one raw row's game: players are its DISTINCT (id, column)
    entries with a non-zero pooling coefficient; a coalition keeps its entries and every
    other entry of the row (every slot holding that id) takes C[field, column] in place.
    Returns {(id, column): phi}."""
    d = model.embed_dim
    coef = model.coefficients(x_raw[None], w_raw[None])[0]
    slot_field = torch.from_numpy(BAG_LAYOUT.slot_field)
    total = {}
    for s in range(x_raw.shape[0]):
        if int(x_raw[s]) >= 0:
            total[int(x_raw[s])] = total.get(int(x_raw[s]), 0.0) + float(coef[s])
    players = [(r, k) for r in sorted(total) if total[r] != 0 for k in range(d)]
    assert len(players) <= 10
    emb = model.embed(x_raw[None])[0].detach()

    @torch.no_grad()
    def loss(kept):
        mixed = emb.clone()
        for s in range(x_raw.shape[0]):
            r = int(x_raw[s])
            for k in range(d):
                if r >= 0 and (r, k) not in kept:
                    mixed[s, k] = book[slot_field[s], k]
        logit = model.head(mixed[None], x_raw[None], w_raw[None])
        return float(bce(logit, y[None])[0])

    n = len(players)
    values = {}
    for size in range(n + 1):
        for sub in itertools.combinations(players, size):
            values[frozenset(sub)] = loss(set(sub))
    phi = {}
    for p in players:
        others = [q for q in players if q != p]
        acc = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for sub in itertools.combinations(others, size):
                acc += weight * (values[frozenset(sub)] - values[frozenset(sub) | {p}])
        phi[p] = acc
    return phi


def test_a_repeated_id_is_one_player_and_weight_zero_values_are_null():
    model = bag_model("deepfm")
    imputer = _imputer(model)
    x, y, w = bag_batch()
    assert torch.equal(x[0, 1:4], torch.tensor([3, 3, 5]))  # genre 0 twice, genre 2
    assert torch.equal(slot_leaders(x)[0], torch.tensor([0, 1, 1, 3, 4, 5]))
    coef = imputer.coefficients(x, w)
    assert torch.allclose(coef[0, 1:4], torch.tensor([2 / 3, 0.0, 1 / 3]))
    assert coef[0, 5] == 0  # a weight-0 tag is a null player
    real = imputer.real_players(x, w)[0].view(6, -1)[:, 0]
    assert real.tolist() == [True, True, False, True, True, False]
    entries = global_entries(x, imputer.embed_dim)[0].view(6, -1)[:, 0]
    assert entries[2] == -1 and entries[1] == 3 * imputer.embed_dim
    # removing the repeated id's player replaces both of its copies
    keep = torch.ones(1, imputer.num_players, dtype=torch.bool)
    keep[0, 1 * imputer.embed_dim:2 * imputer.embed_dim] = False
    manual = model.embed(x[:1]).detach().clone()
    manual[0, 1:3] = imputer.placeholder[1]
    assert torch.allclose(imputer(x[:1], keep, w[:1]), model.head(manual, x[:1], w[:1]))


@pytest.mark.parametrize("name", BAG_MODELS)
def test_fast_equals_reference_equals_generic_with_bags(name):
    model = bag_model(name)
    imputer = _imputer(model)
    x, y, w = bag_batch()
    perm = real_first(sample_permutations(5, 0, len(x), imputer.num_players),
                      imputer.real_players(x, w))
    assert perm.shape[1] < imputer.num_players  # truncated after the real players
    ref = make_engine("reference", imputer).losses(x, y, perm, w)
    fast_engine = make_engine("fast", imputer, max_rows=40)  # several chunks
    fast = fast_engine.losses(x, y, perm, w)
    assert fast_engine.path_name == EXPECTED_PATH[name]  # validated, not dropped
    assert torch.allclose(fast, ref, atol=2e-5, rtol=1e-4), (fast - ref).abs().max()
    emb, base, coef = imputer.embed(x, w)
    with torch.no_grad():
        generic = GenericPath(model).walk_logits(x, emb, base, perm, coef, w)
        path = fast_engine.path.walk_logits(x, emb, base, perm, coef, w)
    assert torch.allclose(path, generic, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["dcn-v2", "dcn-mix"])
def test_cross_path_parallel_with_bags(name):
    model = bag_model(name, structure="parallel")
    imputer = _imputer(model)
    x, y, w = bag_batch()
    perm = sample_permutations(2, 0, len(x), imputer.num_players)
    engine = make_engine("fast", imputer)
    fast = engine.losses(x, y, perm, w)
    ref = make_engine("reference", imputer).losses(x, y, perm, w)
    assert engine.path_name == "cross" and torch.allclose(fast, ref, atol=2e-5)


@pytest.mark.parametrize("antithetic", [False, True])
@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("name", BAG_MODELS)
def test_efficiency_and_null_players_with_bags(name, engine, antithetic):
    model = bag_model(name)
    imputer = _imputer(model)
    x, y, w = bag_batch()
    perm = sample_permutations(3, 0, len(x), imputer.num_players)
    credits, walks = batch_credits(make_engine(engine, imputer), x, y, perm, antithetic, w)
    keep = torch.ones(len(x), imputer.num_players, dtype=torch.bool)
    gap = bce(imputer(x, ~keep, w), y) - bce(imputer(x, keep, w), y)
    assert torch.allclose(credits.sum(1), gap, atol=1e-5)
    null = ~imputer.real_players(x, w)
    assert bool(null.any()) and bool((credits[null] == 0).all())  # exactly 0
    entries = global_entries(x, imputer.embed_dim)
    assert bool((entries[(x < 0).repeat_interleave(imputer.embed_dim, 1)] == -1).all())


def test_estimator_converges_to_exact_bag_shapley():
    """Mean over many permutations (seeds of the stream) -> the exact values of the entry
    game, on row 0 (a duplicated genre, a zero-weight tag) and a few others."""
    model = bag_model("deepfm", embed_dim=2)
    imputer = _imputer(model)
    x_raw, y, w_raw = bag_batch(batch=5, seed=4)
    engine = make_engine("fast", imputer)
    d = imputer.embed_dim
    draws = 3000
    for b in range(len(x_raw)):
        exact = _exact_bag_shapley(model, imputer.placeholder, x_raw[b], y[b], w_raw[b])
        xs, ws = x_raw[b:b + 1].repeat(draws, 1), w_raw[b:b + 1].repeat(draws, 1)
        ys = y[b:b + 1].repeat(draws)
        perm = sample_permutations(11 + b, 0, draws, imputer.num_players)
        credits, _ = batch_credits(engine, xs, ys, perm, False, ws)
        entries = global_entries(xs, d)[0]
        for (r, k), value in exact.items():
            col = int(((entries == r * d + k)).nonzero()[0, 0])
            c = credits[:, col].double()
            se = float(c.std()) / math.sqrt(draws)
            assert abs(float(c.mean()) - value) < 4 * se + 1e-6, (b, r, k, value, c.mean(), se)
        # every credited player is an entry of the exact game, and efficiency holds
        live = entries[credits.abs().sum(0) > 0]
        assert {(int(e) // d, int(e) % d) for e in live} <= set(exact)


def test_exact_game_merges_a_duplicate_id_into_one_player():
    """The duplicated genre of row 0 is one player: its exact value is the walk's mean on
    the merged slot, and the slot of its second copy gets nothing."""
    model = bag_model("fm", embed_dim=1)
    imputer = _imputer(model)
    x_raw, y, w_raw = bag_batch(batch=1)
    exact = _exact_bag_shapley(model, imputer.placeholder, x_raw[0], y[0], w_raw[0])
    assert len(exact) == 4  # user, genre 0 (twice), genre 2, tag 0; the weight-0 tag is null
    x, w = x_raw, w_raw
    engine = make_engine("reference", imputer)
    total = torch.zeros(imputer.num_players, dtype=torch.float64)
    perms = list(itertools.permutations([0, 1, 3, 4]))  # the real players' slots
    for order in perms:
        walk = real_first(torch.tensor([[5, *order, 2]]), imputer.real_players(x, w))
        assert walk.shape == (1, 4)
        total += entry_credits(engine.losses(x, y, walk, w), walk,
                               imputer.num_players)[0].double()
    mean = total / len(perms)  # all orders of the 3 players: exact Shapley
    assert float(mean[2]) == 0.0 and float(mean[5]) == 0.0
    for slot in (0, 1, 3, 4):
        rid = int(x[0, slot])
        assert abs(float(mean[slot]) - exact[(rid, 0)]) < 1e-5



# -- the library's exact oracle (shaver.attribution.exact) on the bag game -------------------

@pytest.mark.parametrize("name", BAG_MODELS)
def test_exact_py_equals_the_independent_oracle_on_bag_rows(name):
    """exact.py enumerates each row's real players only; its values sit on the leading slot
    of each distinct entry, equal the oracle's, and every other position (pads, later copies,
    weight-0 values) holds exactly 0."""
    model = bag_model(name)
    imputer = _imputer(model)
    x, y, w = bag_batch()
    d = imputer.embed_dim
    phi = exact_sample_shapley(imputer, x, y, w)
    assert phi.shape == (len(x), imputer.num_players) and phi.dtype == torch.float64
    entries = global_entries(x, d)
    real = imputer.real_players(x, w)
    for b in range(len(x)):
        oracle = _exact_bag_shapley(model, imputer.placeholder, x[b], y[b], w[b])
        assert int(real[b].sum()) == len(oracle)
        got = {(int(e) // d, int(e) % d): float(v)
               for e, v, r in zip(entries[b], phi[b], real[b]) if r}
        assert got.keys() == oracle.keys()
        for key, value in oracle.items():
            assert abs(got[key] - value) < 1e-5, (name, b, key, got[key], value)
        assert bool((phi[b][~real[b]] == 0).all())


@pytest.mark.parametrize("name", ["fm", "deepfm", "dcn-mix"])
def test_exact_py_is_efficient_and_credits_global_entries_with_bags(name):
    model = bag_model(name)
    imputer = _imputer(model)
    x, y, w = bag_batch()
    phi = exact_sample_shapley(imputer, x, y, w)
    keep = torch.ones(len(x), imputer.num_players, dtype=torch.bool)
    gap = bce(imputer(x, ~keep, w), y).double() - bce(imputer(x, keep, w), y).double()
    assert torch.allclose(phi.sum(1), gap, atol=1e-5)
    table = exact_shapley(imputer, x, y, model.num_features, w)
    assert table.shape == (model.num_features, imputer.embed_dim)
    assert abs(float(table.sum()) - float(gap.mean())) < 1e-5
    d = imputer.embed_dim
    expected = torch.zeros(model.num_features * d, dtype=torch.float64)
    for b in range(len(x)):
        oracle = _exact_bag_shapley(model, imputer.placeholder, x[b], y[b], w[b])
        for (r, k), value in oracle.items():
            expected[r * d + k] += value / len(x)
    assert torch.allclose(table.reshape(-1), expected, atol=1e-6)
    unused = sorted(set(range(model.num_features)) - set(x[x >= 0].unique().tolist()))
    assert unused and bool((table[unused] == 0).all())


def test_exact_py_refuses_a_bag_row_with_too_many_real_players():
    model = bag_model("fm", embed_dim=4)  # row 0: 4 real ids (a weight-0 tag) x 4 = 16
    imputer = _imputer(model)
    x, y, w = bag_batch()
    counts = imputer.real_players(x, w).sum(1)
    assert int(counts[0]) == 16 and imputer.num_players == 24  # a pad-free count
    big = int((counts > MAX_PLAYERS).nonzero()[0, 0])
    with pytest.raises(AttributionError, match=f"sample {big} has {int(counts[big])}"):
        exact_sample_shapley(imputer, x, y, w)
    ok = counts <= MAX_PLAYERS
    phi = exact_sample_shapley(imputer, x[ok], y[ok], w[ok])  # the rows that fit enumerate
    assert phi.shape == (int(ok.sum()), imputer.num_players)


@pytest.mark.parametrize("name", ["deepfm", "dcn-mix"])
def test_fast_engine_converges_to_exact_py_on_a_bag_model(name):
    """Mean credit of the fast engine's truncated walks over many permutations is within 4.5
    standard errors of exact.py's value, position by position (null positions: exactly 0)."""
    model = bag_model(name, seed=3)
    imputer = _imputer(model)
    x, y, w = bag_batch(batch=3, seed=4)
    draws = 1500
    xs, ys, ws = x.repeat(draws, 1), y.repeat(draws), w.repeat(draws, 1)
    perm = sample_permutations(11, 0, len(xs), imputer.num_players)
    credits, _ = batch_credits(make_engine("fast", imputer), xs, ys, perm, False, ws)
    credits = credits.double().view(draws, len(x), -1)
    mean, se = credits.mean(0), credits.std(0) / math.sqrt(draws)
    exact = exact_sample_shapley(imputer, x, y, w)
    real = imputer.real_players(x, w)
    assert bool((mean[~real] == 0).all()) and bool((exact[~real] == 0).all())
    z = (mean - exact).abs()[real] / (se[real] + 1e-9)
    assert float(z.max()) < 4.5, z.max()
    assert float((mean - exact).abs().max()) > 0  # estimates, not the exact values themselves


@pytest.fixture(scope="module")
def bag_ds(tmp_path_factory):
    return write_bag_dataset(tmp_path_factory.mktemp("bags") / "ds", rows=300)


def _trained_like(ds, name="deepfm"):
    return bag_model(name, embed_dim=4, dims=ds.field_dims, layout=ds.layout)


def test_attribute_end_to_end_on_bags_with_the_default_options(bag_ds):
    model = _trained_like(bag_ds)
    res = attribute(model, bag_ds, quiet=True, max_samples=400, batch_size=64)
    n, d = model.embedding.weight.shape
    assert res.phi.shape == (n, d) and res.stderr.shape == (n, d)
    assert bool(torch.isfinite(res.phi).all())
    assert res.settings["control_variate"].endswith("sampled-8")
    assert res.settings["stop"] == "cut" and res.settings["path"] == "fm-mlp"
    assert res.bins is not None and res.bins.shape[1:] == (n, d)
    # bag samples' credits are weighted p_b / q_b in the bins (binned.BinnedCredits.add):
    # the shares sum to phi in expectation, not walk by walk as for single-valued samples
    both = torch.stack([res.bins.sum(0).flatten(), res.phi.flatten()]).double()
    assert float(torch.corrcoef(both)[0, 1]) > 0.95
    freq = np.asarray(bag_ds.frequencies)
    unseen = torch.from_numpy(freq == 0)
    assert bool((res.phi[unseen] == 0).all())


def test_attribute_is_deterministic_and_unseen_rows_are_null_with_bags(tmp_path):
    ds = write_bag_dataset(tmp_path / "small", rows=40, seed=3)
    model = _trained_like(ds, "dcn-v2")
    runs = [attribute(model, ds, quiet=True, max_samples=80, batch_size=16, seed=5,
                      control_variate="off", antithetic=True) for _ in range(2)]
    assert torch.equal(runs[0].phi, runs[1].phi)
    x, _ = ds.arrays("train")
    seen = np.zeros(ds.num_features, bool)
    seen[x[x >= 0]] = True
    assert not seen.all()
    assert bool((runs[0].phi[torch.from_numpy(~seen)] == 0).all())
    assert bool((runs[0].phi[torch.from_numpy(seen)] != 0).any())
    assert runs[0].settings["path"] == "cross"


def test_survivor_walks_credit_no_pruned_entry_with_bags(bag_ds):
    """Refinement walks samples in groups of similar survivor counts; a shorter walk of a
    group goes on into its pruned entries, whose steps are float noise: never a credit."""
    model = _trained_like(bag_ds)
    n, d = model.embedding.weight.shape
    book = torch.randn(model.num_fields, d, generator=torch.Generator().manual_seed(1))
    mask = np.random.default_rng(0).random((n, d)) < 0.5
    acc, _ = attribute_survivors(masked_copy(model, mask, book), bag_ds, mask, book,
                                 samples=200, batch_size=64)
    pruned = torch.from_numpy(~mask.reshape(-1))
    assert bool((acc.sum[pruned] == 0).all()) and bool((acc.sumsq[pruned] == 0).all())
    assert bool((acc.sum[~pruned] != 0).any())
