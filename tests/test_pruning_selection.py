"""Selection among candidate cuts: DeLong components and standard errors, the tie rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from shaver.pruning.selection import Z, choose, components, difference_se, midranks


def test_midranks_average_ties():
    assert midranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert midranks(np.array([5.0, 5.0, 5.0])).tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_give_the_auc_and_the_se_matches_a_bootstrap(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(800) < 0.3
    a = y + rng.normal(0, 1.2, 800)
    b = np.round(a + rng.normal(0, 0.6, 800), 1)  # correlated with a, with ties
    ca, cb = components(y, a), components(y, b)
    assert math.isclose(ca[0], roc_auc_score(y, a), abs_tol=1e-12)
    assert math.isclose(cb[0], roc_auc_score(y, b), abs_tol=1e-12)
    boot = []
    for _ in range(400):
        i = rng.integers(0, 800, 800)
        boot.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert difference_se(ca, cb) == pytest.approx(np.std(boot), rel=0.25)
    assert difference_se(ca, ca) == 0.0
    assert math.isnan(components(np.zeros(5), np.arange(5.0))[0])


def _records(y, preds, kept, names=None):
    names = names or [f"c{i}" for i in range(len(preds))]
    comps = [components(y, p) for p in preds]
    return [{"name": n, "kept": k, "val_auc": c[0], "val_logloss": 0.5}
            for n, k, c in zip(names, kept, comps)], comps


def test_choose_prefers_the_reference_then_fewer_kept_among_ties_only():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.4
    good = y + rng.normal(0, 1.0, 2000)
    near = good + rng.normal(0, 0.05, 2000)  # statistically tied with good
    bad = y + rng.normal(0, 3.0, 2000)
    recs, comps = _records(y, [good, near, bad], [100, 50, 0], ["x", "shaver", "floor"])
    assert choose(recs, comps, "shaver") == 1  # the paper's cut, tied with the best
    assert [r["tied"] for r in recs] == [True, True, False]
    recs, comps = _records(y, [good, near, bad], [100, 50, 0], ["x", "y", "floor"])
    assert choose(recs, comps, "shaver") == 1  # no reference among the tied: fewer kept
    recs, comps = _records(y, [bad, good], [0, 100], ["shaver", "x"])
    assert choose(recs, comps, "shaver") == 1  # the reference is clearly worse: left
    gap = recs[1]["val_auc"] - recs[0]["val_auc"]
    assert gap > Z * difference_se(comps[1], comps[0])


def test_choose_with_one_class_uses_logloss():
    y = np.zeros(10)
    recs, comps = _records(y, [np.arange(10.0), np.arange(10.0)], [1, 1])
    recs[1]["val_logloss"] = 0.1
    assert choose(recs, comps, "shaver") == 1 and not any(r["tied"] for r in recs)


def test_choose_breaks_remaining_ties_by_logloss():
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.5
    p = y + rng.normal(0, 1.0, 500)
    recs, comps = _records(y, [p, p + 1e-9], [0, 0], ["floor/codebook", "floor/zero"])
    recs[0]["val_logloss"], recs[1]["val_logloss"] = 0.70, 0.68
    assert choose(recs, comps, "shaver") == 1
