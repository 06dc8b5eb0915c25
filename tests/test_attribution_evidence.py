"""Standard errors that count the rows not yet walked, and the cut rule that stops on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shaver.attribution.accumulator import Accumulator, SurrogateSample
from shaver.attribution.evidence import RowEvidence
from shaver.attribution.exact import exact_shapley
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.sampling import SampleSource
from shaver.attribution.stopping import CutStability
from shaver.errors import AttributionError
from test_attribution_helpers import any_model, tiny_dataset
from test_attribution_helpers import quiet_attribute as _run

torch.set_num_threads(2)

#: two fields (ids 0-1 and 2-4), one column; id 4 never occurs in D (100 rows)
FIELDS, FREQ, ROWS = [2, 3], np.array([50, 50, 60, 40, 0]), 100


def _acc(n, sums, squares) -> Accumulator:
    acc = Accumulator(5)
    acc.sum = torch.tensor(sums, dtype=torch.float64)
    acc.sumsq = torch.tensor(squares, dtype=torch.float64)
    acc.count = n
    return acc


def _early() -> Accumulator:
    """4 walked rows: all contained id 0 (credit 1) and id 2 (credit 0.05); ids 1 and 3,
    half and 40 % of D, were not reached."""
    return _acc(4, [4.0, 0.0, 0.2, 0.0, 0.0], [4.0, 0.0, 0.01, 0.0, 0.0])


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("evidence") / "ds")


def test_an_id_no_walk_reached_carries_its_fields_spread_at_its_frequency():
    acc = _early()
    evidence = RowEvidence(FIELDS, FREQ, ROWS, 1)
    err = evidence.stderr(acc)
    assert acc.stderr()[1] == 0  # the walks alone read "never seen" as "known"
    # id 1: p = 0.5, field 0's mean square per walked row m2 = 4 / 4 = 1, one pseudo-hit:
    # m2_1 = (0 + 1) / (0.5 * 4 + 1) = 1/3, variance 0.5 * (1/3) / 4 = 1/24
    assert float(err[1]) == pytest.approx((1 / 24) ** 0.5)
    # id 3: p = 0.4, field 1's m2 = 0.01 / 4; m2_3 = 0.0025 / (1.6 + 1)
    assert float(err[3]) == pytest.approx((0.4 * 0.0025 / 2.6 / 4) ** 0.5)
    assert float(err[4]) == 0  # absent from D: a null player, phi = 0 exactly
    assert bool((err >= acc.stderr() - 1e-15).all())  # never below the walks' own spread


def test_well_sampled_entries_keep_their_own_spread():
    n = 100_000
    rng = np.random.default_rng(0)
    credits = rng.normal(0.3, 1.0, n)
    hits = rng.random(n) < 0.5
    x = np.where(hits, credits, 0.0)
    acc = _acc(n, [x.sum(), (~hits * 0.2).sum(), 0, 0, 0],
               [(x * x).sum(), (~hits * 0.04).sum(), 0, 0, 0])
    own, pooled = acc.stderr(), RowEvidence(FIELDS, FREQ, ROWS, 1).stderr(acc)
    assert float(pooled[0] / own[0]) == pytest.approx(1.0, abs=0.01)
    assert float(pooled[1] / own[1]) == pytest.approx(1.0, abs=0.01)


def test_the_surrogate_samples_error_counts_until_it_covers_d():
    acc = _early()
    evidence = RowEvidence(FIELDS, FREQ, ROWS, 1)
    walks_only = evidence.stderr(acc)
    acc.cv = SurrogateSample(5, ROWS)
    acc.cv.add(torch.tensor([[0, 2], [1, 3]]), torch.tensor([[0.5, 0.1], [-0.5, 0.2]]))
    partial = evidence.stderr(acc)
    assert bool((partial >= walks_only).all()) and bool((partial > walks_only).any())
    acc.cv.count = ROWS  # S is all of D: its mean is exact
    assert torch.equal(evidence.stderr(acc), walks_only)
    acc.cv.count, acc.offset = 2, torch.zeros(5, dtype=torch.float64)  # an exact mean
    assert torch.equal(evidence.stderr(acc), walks_only)


def test_the_cut_rule_waits_for_ids_no_walk_has_reached():
    """Keeping 2 of 5 entries: ids 0 and 2 by the walks so far. Unseen id 1 (half of D)
    could well beat id 2 (phi 0.05): the walks' own errors (all 0) call the cut stable, the
    errors with the rows not yet walked do not."""
    acc = _early()
    evidence = RowEvidence(FIELDS, FREQ, ROWS, 1)
    naive = CutStability(5, [0.6], fraction=0.01, draws=16).check(acc, force=True)
    assert naive.stable and naive.regret[0.6] == 0
    check = CutStability(5, [0.6], fraction=0.01, draws=16, error=evidence.stderr).check(
        acc, force=True)
    assert not check.stable and check.regret[0.6] > 0.01


def test_the_cut_rule_fires_once_every_id_is_well_sampled():
    n = 10_000  # ids 0/1 and 2/3 each in their share of the rows, constant credits
    acc = _acc(n, [5000.0, 50.0, 300.0, 4.0, 0.0], [5000.0, 0.5, 15.0, 0.004, 0.0])
    evidence = RowEvidence(FIELDS, FREQ, ROWS, 1)
    check = CutStability(5, [0.6], fraction=0.01, draws=16, error=evidence.stderr).check(
        acc, force=True)
    assert check.stable and check.regret[0.6] < 1e-6


def test_a_mismatched_frequency_table_is_refused():
    with pytest.raises(AttributionError, match="frequencies has 4 ids, the table 5 rows"):
        RowEvidence(FIELDS, FREQ[:4], ROWS, 1)


def test_errors_of_an_early_stop_cover_the_exact_shapley_values(ds, tmp_path):
    """Stops after 6 walks of 51 rows (sampled control variate on the same rows): over 24
    seeds the errors with the rows not yet walked cover the distance to the exact Shapley
    values of every entry of D (mean z^2 1.38 when written; 1.70 for the walks' own errors,
    on the entries where those are not 0), while the walks' own errors are 0 on entries
    whose phi is wrong (14 of 240 when written)."""
    model = any_model("deepfm")
    source = SampleSource(ds, "train+val")
    evidence = RowEvidence(ds.field_dims, source.frequencies(), source.size, 2)
    phis, errs, naive = [], [], []
    for seed in range(24):
        state = tmp_path / f"s{seed}.safetensors"
        res = _run(model, ds, max_samples=6, batch_size=6, seed=seed, control_variate="sampled",
                   surrogate_rows=1, checkpoint_path=state)
        acc, _ = Accumulator.load(state, settings=_settings(state))
        phis.append(res.phi.double().reshape(-1))
        errs.append(evidence.stderr(acc))
        naive.append(acc.stderr())
    phis, errs, naive = torch.stack(phis), torch.stack(errs), torch.stack(naive)
    x, y = (torch.from_numpy(a) for a in ds.arrays("train+val"))
    exact = exact_shapley(PlaceholderImputer(model.cpu(), res.codebook), x, y,
                          ds.num_features).double().reshape(-1)
    seen = evidence.share > 0
    off = (phis - exact)[:, seen]
    sure = errs[:, seen] == 0  # only the entries of a field with one id (placeholder = itself)
    assert int(sure.sum()) == 2 * len(phis) and float(off[sure].abs().max()) < 1e-9
    z2 = float((off[~sure] / errs[:, seen][~sure]).pow(2).mean())
    assert 0.3 < z2 < 2.0, z2
    missed = (naive[:, seen] == 0) & (off.abs() > 1e-9)
    assert int(missed.sum()) > 0  # what the walks' own errors got wrong


def _settings(state):
    import json

    from safetensors import safe_open

    with safe_open(str(state), "pt") as f:
        return json.loads(f.metadata()["settings"])


def test_the_default_floor_is_none_for_the_cut_rule_and_one_pass_for_sage(ds):
    size = ds.num_rows("train+val")
    cut = _run(any_model("deepfm"), ds, stop="cut", stop_fraction=0.5, max_samples=50 * size)
    assert cut.settings["min_passes"] == 0.0 and cut.settings["stop_reason"] == "stable"
    sage = _run(any_model("lr"), ds, stop="sage", tolerance=1e6, batch_size=4)
    assert sage.settings["min_passes"] == 1.0 and sage.count >= size
