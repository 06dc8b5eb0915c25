"""Fitting the logit calibration: recovery, optimality, never worse than its starts, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from shaver.errors import ArtifactError, DataError
from shaver.runtime.calibration import (
    FORM,
    apply_calibration,
    fit_logit_calibration,
    log_losses,
    read_calibration,
)


def _sample(scale, bias, n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.3, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(scale * z + bias)))).astype(np.float64)
    return z, y


@pytest.mark.parametrize("scale, bias", [(1.7, -0.4), (0.3, -2.0), (1.0, 0.0)])
def test_recovers_known_scale_and_bias(scale, bias):
    z, y = _sample(scale, bias)
    a, b = fit_logit_calibration(z, y)
    assert abs(a - scale) < 0.03 and abs(b - bias) < 0.03


def test_fit_is_the_maximum_likelihood_and_deterministic():
    z, y = _sample(0.8, 0.5, n=5000, seed=3)
    z32 = z.astype(np.float32)  # float32 logits, as a model gives them
    a, b = fit_logit_calibration(z32, y, prior=0.0)
    assert fit_logit_calibration(z32, y, prior=0.0) == (a, b)
    # first-order optimality, and an independent optimiser (BFGS on the mean log loss)
    z = z32.astype(np.float64)
    p = 1 / (1 + np.exp(-(a * z + b)))
    assert abs(np.mean((p - y) * z)) < 1e-12 and abs(np.mean(p - y)) < 1e-12
    ref = minimize(lambda v: log_losses(z, y, *v).mean(), [1.0, 0.0], method="BFGS",
                   options={"gtol": 1e-10})
    np.testing.assert_allclose([a, b], ref.x, atol=1e-4)
    assert log_losses(z, y, a, b).mean() <= ref.fun + 1e-15


def test_log_losses_by_brute_force():
    z, y = np.array([-30.0, -1.0, 0.0, 2.0, 20.0]), np.array([1, 0, 1, 1, 0])
    p = 1 / (1 + np.exp(-(0.5 * z - 1.0)))
    want = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(log_losses(z, y, 0.5, -1.0), want, rtol=1e-10)
    assert log_losses(z, y).dtype == np.float64 and log_losses(z, y).shape == (5,)
    # stable far out: a confident wrong logit costs its magnitude, not inf
    np.testing.assert_allclose(log_losses([800.0], [0]), [800.0])


def test_constant_logits_give_the_base_rate():
    scale, bias = fit_logit_calibration(np.full(8, 2.5), [1, 0, 0, 0, 1, 0, 0, 0])
    assert scale == 0.0 and bias == pytest.approx(np.log(0.25 / 0.75), abs=1e-15)


@pytest.mark.parametrize("logits, labels, match", [
    ([0.1, 0.2], [1, 1], "all 2 labels are 1"),
    ([0.1, 0.2], [0, 0], "all 2 labels are 0"),
    ([0.1, 0.2], [0, 1, 1], "2 logits and 3 labels"),
    ([], [], "0 logits"),
    ([0.1, np.nan], [0, 1], "NaN or infinite"),
    ([0.1, 0.2], [0, 2], "labels must be 0 or 1, found 2"),
])
def test_bad_input_is_refused_in_one_line(logits, labels, match):
    with pytest.raises(DataError, match=match):
        fit_logit_calibration(logits, labels)


def test_separable_data_still_gives_finite_numbers_better_than_the_starts():
    z = np.linspace(-3, 3, 40)
    y = (z > 0).astype(float)
    a, b = fit_logit_calibration(z, y)
    assert np.isfinite([a, b]).all() and a > 1
    assert log_losses(z, y, a, b).mean() < log_losses(z, y).mean()


def test_the_prior_keeps_a_tiny_separable_split_moderate():
    """Four separable rows: maximum likelihood runs the scale away (probabilities of exactly
    0 and 1 in float32); the prior worth one row keeps it moderate, and it fades with n."""
    z, y = np.array([-0.2, -0.1, 0.1, 0.2]), np.array([0.0, 0.0, 1.0, 1.0])
    a_ml, _ = fit_logit_calibration(z, y, prior=0.0)
    a, b = fit_logit_calibration(z, y)
    assert a_ml > 100 and 1 < a < 40 and abs(b) < 1e-9
    p = 1 / (1 + np.exp(-(a * np.float32(0.2) + b)))
    assert 0 < p < 1 and np.float32(p) < 1
    big_z, big_y = _sample(0.8, 0.5, n=20_000, seed=4)
    np.testing.assert_allclose(fit_logit_calibration(big_z, big_y),
                               fit_logit_calibration(big_z, big_y, prior=0.0), atol=2e-3)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_property_never_worse_than_identity_or_constant(data):
    n = data.draw(st.integers(2, 60))
    z = np.array(data.draw(st.lists(st.floats(-50, 50), min_size=n, max_size=n)))
    y = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), float)
    if y.min() == y.max():
        y[0] = 1 - y[0]
    a, b = fit_logit_calibration(z, y)
    rate = y.mean()
    fitted = log_losses(z, y, a, b).mean()
    assert fitted <= log_losses(z, y).mean()
    assert fitted <= log_losses(z, y, 0.0, np.log(rate / (1 - rate))).mean() + 1e-15
    assert fit_logit_calibration(z, y) == (a, b)


def test_apply_matches_float32_arithmetic():
    z = np.array([-1.5, 0.0, 3.25], np.float32)
    cal = (np.float32(0.75), np.float32(-0.125))
    out = apply_calibration(z, cal)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, z * cal[0] + cal[1])
    assert apply_calibration(z, None) is z


@pytest.mark.parametrize("header, arrays, version, match", [
    ({"calibration": FORM}, {}, 2, "no section"),
    ({}, {"calibration": np.ones(2, np.float32)}, 2, "header None"),
    ({"calibration": "platt"}, {"calibration": np.ones(2, np.float32)}, 2, "header 'platt'"),
    ({"calibration": FORM}, {"calibration": np.ones(3, np.float32)}, 2, r"float32 \(3,\)"),
    ({"calibration": FORM}, {"calibration": np.ones(2, np.float16)}, 2, "float16"),
    ({"calibration": FORM}, {"calibration": np.array([1, np.inf], np.float32)}, 2, "finite"),
    ({"calibration": FORM}, {"calibration": np.ones(2, np.float32)}, 1, "format v1"),
])
def test_reader_refuses_malformed_calibration(header, arrays, version, match):
    with pytest.raises(ArtifactError, match=match):
        read_calibration(header, arrays, "a.shaver", version)


def test_reader_returns_the_pair_or_none():
    assert read_calibration({}, {}, "a", 1) is None
    cal = read_calibration({"calibration": FORM},
                           {"calibration": np.array([2.0, -1.0], np.float32)}, "a", 2)
    assert cal == (2.0, -1.0) and cal[0].dtype == np.float32
