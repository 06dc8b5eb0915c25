"""Credits per bin of the kept fraction: exact strata, unbiasedness, Shapley recovered,
engines / antithetic / control variate / resume / distributed merge, file format, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from shaver.attribution.accumulator import Accumulator
from shaver.attribution.binned import (
    BinnedCredits,
    bin_edges,
    bin_probabilities,
    check_edges,
    step_bins,
)
from shaver.attribution.estimator import entry_credits, make_engine
from shaver.attribution.exact import exact_sample_shapley, exact_sample_strata
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import sample_permutations
from shaver.attribution.result import Attribution
from shaver.attribution.semivalue import (
    MissingBinsError,
    active_kept_fraction,
    bin_weights,
    require_bins,
    semivalue_scores,
)
from shaver.errors import AttributionError
from test_attribution_helpers import any_model, tiny_dataset
from test_attribution_helpers import quiet_attribute as _run

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("binned") / "ds")


@pytest.mark.parametrize("players", [1, 2, 6, 128, 624])
@pytest.mark.parametrize("bins", [1, 3, 8])
def test_edges_cover_every_position_once_finer_at_small_fractions(players, bins):
    if bins > players:
        with pytest.raises(AttributionError, match=f"{bins} bins need at least {bins} walk "
                           f"positions, but a sample has only m\\*d = {players} active "
                           f"entries; use bins <= {players}"):
            bin_edges(players, bins)
        return
    edges = bin_edges(players, bins)
    assert edges[0] == 1 and edges[-1] == players + 1 and len(edges) == bins + 1
    widths = np.diff(edges)
    assert (widths >= 1).all() and math.isclose(bin_probabilities(edges).sum(), 1.0)
    if players >= 100 and bins > 1:
        assert widths[0] < widths[-1]  # geometric: finest where few entries are kept
    steps = step_bins(edges)
    for t in range(players):  # step t removes from a coalition keeping c = P - t
        c = players - t
        assert edges[int(steps[t])] <= c < edges[int(steps[t]) + 1]


def test_bad_bins_and_edges_are_refused():
    with pytest.raises(AttributionError, match="bins must be >= 1"):
        bin_edges(10, 0)
    with pytest.raises(AttributionError, match="not increasing from 1 to m\\*d \\+ 1 = 7"):
        check_edges([1, 3, 3, 7], 6)
    acc = BinnedCredits(4, 6, 2)
    with pytest.raises(AttributionError, match="walks over 5 entries, bins built for 6"):
        acc.add(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 5),
                torch.arange(5).view(1, 5))
    with pytest.raises(AttributionError, match="cannot merge credits binned differently"):
        acc.merge(BinnedCredits(4, 6, 3))
    with pytest.raises(AttributionError, match="cannot merge"):
        acc.merge(None)


def _imputer(model, seed=2):
    gen = torch.Generator().manual_seed(seed)
    book = torch.randn(model.num_fields, model.embed_dim, generator=gen)
    return PlaceholderImputer(model, book)


def _samples(dims, batch=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, *dims[:-1]]).cumsum(0)
    x = torch.stack([torch.randint(0, d, (batch,), generator=gen) for d in dims], 1) + offsets
    return x, (torch.rand(batch, generator=gen) < 0.5).float()


@pytest.mark.parametrize("name", ["deepfm", "tanh-net"])
def test_exact_strata_average_to_exact_shapley(name):
    model = any_model(name, seed=3)
    imputer = _imputer(model)
    x, y = _samples([3, 4, 2])
    edges = bin_edges(imputer.num_players, 3)
    strata = exact_sample_strata(imputer, x, y, edges)
    p = torch.from_numpy(bin_probabilities(edges))
    assert torch.allclose((strata * p[None, :, None]).sum(1), exact_sample_shapley(imputer, x, y),
                          atol=1e-9)


@pytest.mark.parametrize("name", ["deepfm", "dcn-mix"])
def test_binned_estimates_are_unbiased_per_bin(name):
    """Per-bin estimates over many walks lie within 5 standard errors of the exact strata;
    the uniform weighting of the bins is the plain Shapley estimate."""
    model = any_model(name, seed=3)
    imputer = _imputer(model)
    x, y = _samples([3, 4, 2])
    players = imputer.num_players
    edges = bin_edges(players, 3)
    exact = exact_sample_strata(imputer, x, y, edges)
    groups, per_group = 20, 150
    engine = make_engine("fast", imputer)
    estimates = []
    for g in range(groups):
        xs, ys = x.repeat(per_group, 1), y.repeat(per_group)
        perm = sample_permutations(11, g * len(xs), len(xs), players)
        credits = entry_credits(engine.losses(xs, ys, perm), perm)
        entries = (torch.arange(len(xs)) % 2)[:, None] * players + torch.arange(players)
        acc = BinnedCredits(2 * players, players, edges=edges)
        acc.add(entries, credits, perm)
        shares = acc.shares(per_group).double().view(len(edges) - 1, 2, players)
        p = torch.from_numpy(bin_probabilities(edges))
        estimates.append((shares / p[:, None, None]).permute(1, 0, 2))
        plain = credits.double().view(per_group, 2, players).mean(0)
        assert torch.allclose(shares.sum(0), plain, atol=1e-5)
    est = torch.stack(estimates)
    mean, se = est.mean(0), est.std(0) / math.sqrt(groups)
    z = (mean - exact).abs() / (se + 1e-9)
    assert float(z.max()) < 5.0, z.max()
    assert float((mean - exact).abs().max()) > 0


def test_weights_uniform_is_shapley_and_target_moves_the_mass():
    edges = bin_edges(128, 8)
    assert np.allclose(bin_weights(edges, None), bin_probabilities(edges))
    low, high = bin_weights(edges, 0.02), bin_weights(edges, 0.9)
    assert math.isclose(low.sum(), 1.0) and math.isclose(high.sum(), 1.0)
    centre = np.arange(len(edges) - 1)
    assert (low * centre).sum() < (high * centre).sum()
    assert np.argmax(high) == len(edges) - 2 and np.argmax(low) <= 3
    assert np.allclose(bin_weights(edges, 0.0), bin_weights(edges, 1 / 128))
    with pytest.raises(AttributionError, match="target kept fraction must be in"):
        bin_weights(edges, 1.5)


def test_active_kept_fraction_weights_rows_by_frequency():
    mask = np.array([[True, True], [False, False], [True, False]])
    freq = np.array([3, 1, 0])
    assert active_kept_fraction(mask, freq) == pytest.approx(6 / 8)
    assert active_kept_fraction(mask, np.zeros(3)) == pytest.approx(3 / 6)


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("options", [{}, {"antithetic": True}, {"control_variate": True}])
def test_attribute_bins_sum_to_phi_with_every_option(ds, engine, options):
    model = any_model("deepfm")
    res = _run(model, ds, max_samples=40, engine=engine, bins=3, **options)
    assert res.bins.shape == (3, *res.phi.shape) and res.bin_edges == bin_edges(6, 3)
    assert torch.allclose(res.bins.sum(0), res.phi, atol=1e-6)
    assert np.allclose(semivalue_scores(res, None), res.phi.numpy(), atol=1e-6)
    assert res.settings["bins"] == res.bin_edges


def test_engines_agree_and_resume_and_merge_keep_the_bins(ds, tmp_path):
    model = any_model("deepfm")
    fast = _run(model, ds, max_samples=48, bins=4)
    ref = _run(model, ds, max_samples=48, bins=4, engine="reference")
    assert torch.allclose(fast.bins, ref.bins, atol=1e-6)
    state = tmp_path / "state.safetensors"
    _run(model, ds, max_samples=24, bins=4, checkpoint_path=state)
    resumed = _run(model, ds, max_samples=48, bins=4, checkpoint_path=state, resume=True)
    assert torch.allclose(resumed.bins, fast.bins, atol=1e-6)
    with pytest.raises(AttributionError, match="differs in: bins"):
        _run(model, ds, max_samples=48, bins=2, checkpoint_path=state, resume=True)
    a, b = Accumulator(12), Accumulator(12)
    for acc in (a, b):
        acc.binned = BinnedCredits(12, 6, 2)
        acc.binned.add(torch.arange(6).view(1, 6), torch.ones(1, 6), torch.arange(6).view(1, 6))
        acc.count = 1
    a.merge(b)
    assert float(a.binned.sums.sum()) == 12.0
    a.reset()
    assert float(a.binned.sums.abs().sum()) == 0.0


def test_more_bins_than_walk_positions_is_refused(ds):
    with pytest.raises(AttributionError, match="7 bins need at least 7 walk positions, but a "
                       "sample has only m\\*d = 6 active entries; use bins <= 6"):
        _run(any_model("deepfm"), ds, max_samples=8, bins=7)
    with pytest.raises(AttributionError, match="bins must be >= 0"):
        _run(any_model("deepfm"), ds, max_samples=8, bins=-1)


def test_result_file_keeps_bins_and_old_files_load(ds, tmp_path):
    res = _run(any_model("fm"), ds, max_samples=16, bins=2)
    back = Attribution.load(res.save(tmp_path / "a.safetensors"))
    assert torch.equal(back.bins, res.bins) and back.bin_edges == res.bin_edges
    tensors = load_file(tmp_path / "a.safetensors")
    with open(tmp_path / "a.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    meta = header["__metadata__"]
    assert meta["format_version"] == "2"
    meta.update(format_version="1")
    del meta["bin_edges"], meta["checksum"], tensors["bins"]  # as version 1 wrote it
    save_file(tensors, tmp_path / "v1.safetensors", metadata=meta)
    old = Attribution.load(tmp_path / "v1.safetensors")
    assert old.bins is None and old.bin_edges == [] and torch.equal(old.phi, res.phi)
    with pytest.raises(MissingBinsError, match="this attribution has no bins, so it cannot give "
                       "budget-aware scores.*Re-run `shaver attribute --run RUN`"):
        require_bins(old)
    none = _run(any_model("fm"), ds, max_samples=8, bins=0)
    assert none.bins is None and "bins" not in none.settings


def test_bad_bins_in_a_result_are_refused():
    phi = torch.zeros(4, 2)
    kw = dict(phi=phi, stderr=phi, count=1, codebook=torch.zeros(2, 2), placeholder="zero")
    from shaver.errors import CheckpointError

    with pytest.raises(CheckpointError, match="bins must be \\(B, 4, 2\\) with B \\+ 1"):
        Attribution(**kw, bins=torch.zeros(2, 4, 2), bin_edges=[1, 5])
    with pytest.raises(CheckpointError, match="bin_edges given without bins"):
        Attribution(**kw, bin_edges=[1, 5])


def test_bag_walks_are_weighted_to_the_bin_probabilities():
    """A sample with P_b < P real players (bags) maps its steps onto the padded scale; each
    credit is weighted p_b / q_b, so one walk with every credit 1 puts exactly p_b * P_b into
    bin b, whatever P_b (unweighted, its steps would land unevenly: q_b != p_b)."""
    players, bins = 40, 6
    binned = BinnedCredits(num_entries=players, players=players, bins=bins)
    p = bin_probabilities(binned.edges)
    gen = torch.Generator().manual_seed(0)
    real = torch.tensor([40, 29, 17, 7, 3])
    perms, entries = [], []
    for count in real.tolist():  # real players first, pads after them (entry -1)
        order = torch.randperm(count, generator=gen)
        perms.append(torch.cat([order, torch.arange(count, players)]))
        entries.append(torch.cat([torch.arange(count), torch.full((players - count,), -1)]))
    perm, entries = torch.stack(perms), torch.stack(entries)
    walk = int(real.max())
    for row, count in enumerate(real.tolist()):
        binned.reset()
        binned.add(entries[row:row + 1], torch.ones(1, players), perm[row:row + 1, :walk],
                   real=real[row:row + 1])
        got = binned.sums.sum(1).double().numpy()
        reached = got > 0
        assert np.allclose(got[reached], p[reached] * count, rtol=1e-5), count
        if count == players:
            assert reached.all()
