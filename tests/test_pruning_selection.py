"""Selection among candidate cuts: DeLong components and standard errors, the tie rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from shaver.pruning.selection import (
    RULE,
    Z,
    choose,
    components,
    difference_se,
    loss_difference_se,
    midranks,
)


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
    losses = [np.full(len(y), 0.5) for _ in preds]
    return [{"name": n, "kept": k, "val_auc": c[0], "val_logloss": 0.5}
            for n, k, c in zip(names, kept, comps)], comps, losses


def test_choose_prefers_the_reference_then_fewer_kept_among_ties_only():
    rng = np.random.default_rng(0)
    y = rng.random(2000) < 0.4
    good = y + rng.normal(0, 1.0, 2000)
    near = good + rng.normal(0, 0.05, 2000)  # statistically tied with good
    bad = y + rng.normal(0, 3.0, 2000)
    recs, comps, losses = _records(y, [good, near, bad], [100, 50, 0], ["x", "shaver", "floor"])
    assert choose(recs, comps, losses, "shaver") == 1  # the paper's cut, tied with the best
    assert [r["tied"] for r in recs] == [True, True, False]
    recs, comps, losses = _records(y, [good, near, bad], [100, 50, 0], ["x", "y", "floor"])
    assert choose(recs, comps, losses, "shaver") == 1  # no reference among the tied: fewer kept
    recs, comps, losses = _records(y, [bad, good], [0, 100], ["shaver", "x"])
    assert choose(recs, comps, losses, "shaver") == 1  # the reference is clearly worse: left
    gap = recs[1]["val_auc"] - recs[0]["val_auc"]
    assert gap > Z * difference_se(comps[1], comps[0])


# -- constructed records: the standard errors are set exactly ---------------------------------
# comp(auc, s): DeLong components whose difference with comp(., t) has standard error
# |s - t| * SE_AUC; loss(ll, s): per-row losses whose difference with loss(., t) has standard
# error |s - t| * SE_LL. Equal spreads: standard error 0 (only an exact tie is tied).

ROWS = 100
ALT = np.resize([1.0, -1.0], ROWS)
SE_AUC = math.sqrt(ROWS / (ROWS - 1)) * math.sqrt(2 / ROWS)
SE_LL = math.sqrt(ROWS / (ROWS - 1)) / math.sqrt(ROWS)


def comp(auc, spread=0.0):
    return auc, auc + spread * ALT, auc + spread * ALT


def loss(ll, spread=0.0):
    return ll + spread * ALT


def case(*rows, size_key="kept"):
    """rows: (name, size, auc, auc_spread, logloss, logloss_spread)."""
    records = [{"name": n, size_key: size, "val_auc": a, "val_logloss": ll}
               for n, size, a, _, ll, _ in rows]
    return records, [comp(a, sa) for _, _, a, sa, _, _ in rows], \
        [loss(ll, sl) for _, _, _, _, ll, sl in rows]


def test_constructed_standard_errors_are_what_the_cases_assume():
    assert difference_se(comp(0.8, 0.2), comp(0.7)) == pytest.approx(0.2 * SE_AUC)
    assert loss_difference_se(loss(0.5, 0.2), loss(0.6)) == pytest.approx(0.2 * SE_LL)
    assert difference_se(comp(0.8, 0.3), comp(0.7, 0.3)) == pytest.approx(0.0, abs=1e-12)


def test_tied_on_auc_and_logloss_prefers_the_reference():
    # b is 0.01 AUC below a with SE 0.028, and 0.01 LogLoss above with SE 0.020: tied
    recs, comps, losses = case(("a", 50, 0.80, 0.0, 0.50, 0.0), ("shaver", 90, 0.79, 0.2, 0.51, 0.2),
                               ("c", 10, 0.70, 0.0, 0.50, 0.0))
    assert choose(recs, comps, losses, "shaver") == 1  # tied: the reference, though larger
    assert [r["tied"] for r in recs] == [True, True, False]  # c: 0.10 AUC below, SE 0


def test_tied_on_auc_but_clearly_worse_logloss_is_not_tied():
    # b: AUC tied with a, but LogLoss 0.10 above the best with SE 0.020
    recs, comps, losses = case(("a", 50, 0.80, 0.0, 0.50, 0.0), ("shaver", 10, 0.79, 0.2, 0.60, 0.2))
    assert choose(recs, comps, losses, "shaver") == 0
    assert [r["tied"] for r in recs] == [True, False]
    # the same LogLoss gap within a wide enough SE (1.5 * SE_LL = 0.15): tied, the reference
    recs, comps, losses = case(("a", 50, 0.80, 0.0, 0.50, 0.0), ("shaver", 10, 0.79, 0.2, 0.60, 1.5))
    assert choose(recs, comps, losses, "shaver") == 1


def test_tied_on_logloss_but_clearly_worse_auc_is_not_tied():
    recs, comps, losses = case(("a", 50, 0.80, 0.0, 0.50, 0.0), ("shaver", 10, 0.70, 0.2, 0.50, 0.0))
    assert choose(recs, comps, losses, "shaver") == 0  # 0.10 AUC below with SE 0.028
    assert [r["tied"] for r in recs] == [True, False]


def test_no_candidate_tied_on_both_falls_back_to_the_lowest_logloss_among_auc_tied():
    recs, comps, losses = case(
        ("a", 10, 0.80, 0.0, 0.60, 0.0),      # best AUC, LogLoss clearly worse than b's
        ("b", 10, 0.60, 0.0, 0.40, 0.0),      # best LogLoss, AUC clearly worse than a's
        ("c", 90, 0.79, 0.2, 0.55, 0.0),      # AUC tied with a, LogLoss clearly worse than b's
        ("shaver", 1, 0.78, 0.2, 0.58, 0.0))  # AUC tied with a, LogLoss above c's
    assert choose(recs, comps, losses, "shaver") == 2  # not the reference, not the smallest
    assert [r["tied"] for r in recs] == [False, False, True, False]


def test_among_the_tied_the_smallest_then_logloss_then_auc_then_order():
    tied = dict(auc_spread=0.5, ll_spread=0.5)  # every pair within its standard errors

    def rows(*items, size_key="kept"):
        return case(*[(n, size, a, tied["auc_spread"] * i, ll, tied["ll_spread"] * i)
                      for i, (n, size, a, ll) in enumerate(items)], size_key=size_key)

    recs, comps, losses = rows(("a", 30, 0.80, 0.50), ("b", 20, 0.79, 0.51),
                               ("c", 40, 0.80, 0.50))
    assert choose(recs, comps, losses, "shaver") == 1 and all(r["tied"] for r in recs)
    recs, comps, losses = rows(("a", 20, 0.80, 0.51), ("b", 20, 0.79, 0.50))
    assert choose(recs, comps, losses, "shaver") == 1  # same size: the lower LogLoss
    recs, comps, losses = rows(("a", 20, 0.79, 0.50), ("b", 20, 0.80, 0.50))
    assert choose(recs, comps, losses, "shaver") == 1  # same size and LogLoss: higher AUC
    recs, comps, losses = rows(("a", 20, 0.80, 0.50), ("b", 20, 0.80, 0.50))
    assert choose(recs, comps, losses, "shaver") == 0  # all equal: the first
    # a kept-entry budget prefers fewer entries among the tied; a byte budget (size_key None)
    # has no size preference: the higher AUC, then the lower LogLoss
    recs, comps, losses = rows(("a", 9, 0.79, 0.50), ("b", 1, 0.80, 0.51))
    assert choose(recs, comps, losses, "shaver", "kept") == 1
    recs, comps, losses = rows(("a", 9, 0.80, 0.51), ("b", 1, 0.79, 0.50))
    assert choose(recs, comps, losses, "shaver", None) == 0
    recs, comps, losses = rows(("a", 9, 0.80, 0.51), ("b", 1, 0.80, 0.50))
    assert choose(recs, comps, losses, "shaver", None) == 1


def test_a_reference_that_is_not_tied_is_left():
    recs, comps, losses = case(("shaver", 1, 0.70, 0.0, 0.50, 0.0), ("x", 9, 0.80, 0.0, 0.50, 0.0),
                               ("y", 5, 0.80, 0.0, 0.50, 0.0))
    assert choose(recs, comps, losses, "shaver") == 2  # x and y tied exactly: the smaller
    assert [r["tied"] for r in recs] == [False, True, True]


def test_choose_with_one_class_uses_logloss():
    recs, comps, losses = case(("a", 1, math.nan, 0.0, 0.5, 0.0), ("b", 1, math.nan, 0.0, 0.1, 0.0))
    assert choose(recs, comps, losses, "shaver") == 1
    assert [r["tied"] for r in recs] == [False, True]
    # a NaN AUC beside finite ones is never tied
    recs, comps, losses = case(("shaver", 1, math.nan, 0.0, 0.1, 0.0), ("b", 5, 0.7, 0.0, 0.5, 2.0))
    assert choose(recs, comps, losses, "shaver") == 1 and not recs[0]["tied"]


def test_choose_breaks_remaining_ties_by_logloss():
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.5
    p = y + rng.normal(0, 1.0, 500)
    recs, comps, losses = _records(y, [p, p + 1e-9], [0, 0], ["floor/codebook", "floor/zero"])
    recs[0]["val_logloss"], recs[1]["val_logloss"] = 0.70, 0.68
    assert choose(recs, comps, losses, "shaver") == 1


def test_the_rule_is_stated():
    assert "LogLoss" in RULE and "DeLong" in RULE and str(Z) in RULE
