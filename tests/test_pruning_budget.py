"""Budgets (units, parsing, validation, resolution) and the sort-once pruning order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shaver.errors import BudgetError
from shaver.table.budget import (
    Budget,
    as_budgets,
    parse_budget_list,
    parse_bytes,
    resolve_bytes,
)
from shaver.table.order import PruneOrder, ScoreError


def test_int_versus_float_edge_like_torch_prune():
    # 1 (int) keeps one entry; 1.0 (float) replaces every entry.
    assert Budget.parse(1) == Budget("params", 1)
    assert Budget.parse(1.0) == Budget("sparsity", 1.0)
    assert Budget.parse("1") == Budget("params", 1)
    assert Budget.parse("1.0") == Budget("sparsity", 1.0)
    assert Budget.parse(1).kept_entries(10) == 1
    assert Budget.parse(1.0).kept_entries(10) == 0
    assert Budget.parse(np.int64(3)) == Budget("params", 3)
    assert Budget.parse(np.float32(0.5)) == Budget("sparsity", 0.5)


@pytest.mark.parametrize("text, expected", [
    ("50%", Budget("sparsity", 0.5)),
    ("0.95", Budget("sparsity", 0.95)),
    ("2MiB", Budget("bytes", 2 * 2**20)),
    ("500KB", Budget("bytes", 500_000)),
    ("500 kb", Budget("bytes", 500_000)),
    ("123456B", Budget("bytes", 123456)),
    ("1.5KiB", Budget("bytes", 1536)),
    ("bytes=4096", Budget("bytes", 4096)),
    ("params=7", Budget("params", 7)),
    ("sparsity=0.2", Budget("sparsity", 0.2)),
])
def test_parse_strings(text, expected):
    assert Budget.parse(text) == expected
    assert Budget.parse(expected.label) == expected


@pytest.mark.parametrize("bad, match", [
    (1.5, r"\[0, 1\]"), (-0.1, r"\[0, 1\]"), (float("nan"), r"\[0, 1\]"), ("101%", r"\[0, 1\]"),
    ("inf", r"\[0, 1\]"), (-3, ">= 0"), (True, "bool"), ("half", "cannot read a sparsity"),
    ("volume=3", "unknown budget kind"), ("params=1.0", "integer count"),
    ("bytes=2 parsecs", "byte size"), ("bytes=0B", "> 0"), (None, "cannot read"),
])
def test_parse_rejects(bad, match):
    with pytest.raises(BudgetError, match=match):
        Budget.parse(bad)


def test_explicit_constructors_and_lists():
    assert Budget.sparsity("1") == Budget("sparsity", 1.0)  # explicit units: "1" is 100 %
    assert Budget.params("12") == Budget("params", 12)
    assert Budget.bytes_("123456") == Budget("bytes", 123456)
    with pytest.raises(BudgetError, match="integer count"):
        Budget.params("1.0")
    with pytest.raises(BudgetError, match="must be an integer"):
        Budget("bytes", 1.5)
    with pytest.raises(BudgetError, match="unknown budget kind"):
        Budget("volume", 1)
    assert parse_budget_list("0.5, 0.8,0.999", "sparsity") == [
        Budget.sparsity(0.5), Budget.sparsity(0.8), Budget.sparsity(0.999)]
    with pytest.raises(BudgetError, match="empty"):
        parse_budget_list(" , ", "params")
    assert as_budgets([0.5, 3, "1KiB"]) == [Budget.sparsity(0.5), Budget.params(3),
                                            Budget.bytes_(1024)]
    assert as_budgets(0.5) == [Budget.sparsity(0.5)]
    with pytest.raises(BudgetError, match="no budget"):
        as_budgets([])
    assert parse_bytes("2GB") == 2 * 10**9
    assert Budget.sparsity(0.95).to_json() == {"kind": "sparsity", "value": 0.95,
                                               "label": "sparsity=0.95"}


def test_resolution_against_the_table():
    assert Budget.sparsity(0).kept_entries(144) == 144
    assert Budget.sparsity(0.5).kept_entries(144) == 72
    assert Budget.sparsity(0.999).kept_entries(144) == 0
    assert Budget.params(144).kept_entries(144) == 144
    with pytest.raises(BudgetError, match="more entries than the table"):
        Budget.params(145).kept_entries(144)
    with pytest.raises(BudgetError, match="resolve_bytes"):
        Budget.bytes_(100).kept_entries(144)


def fake_size(mask: np.ndarray) -> int:
    """A monotone artifact-size model: fixed 100 + 4 bytes per kept value + 1 per touched row."""
    return 100 + 4 * int(mask.sum()) + int(mask.any(axis=1).sum())


def test_bytes_budget_is_the_largest_fitting_cut():
    rng = np.random.default_rng(0)
    order = PruneOrder(rng.standard_normal((30, 4)))
    total = 120
    for limit in (100, 101, 150, 333, 700):
        kept = resolve_bytes(Budget.bytes_(limit), fake_size, order.mask, total)
        assert fake_size(order.mask(kept)) <= limit
        if kept < total:
            assert fake_size(order.mask(kept + 1)) > limit
    assert resolve_bytes(Budget.bytes_(10**6), fake_size, order.mask, total) == total
    with pytest.raises(BudgetError, match="minimum artifact size of 100 bytes"):
        resolve_bytes(Budget.bytes_(99), fake_size, order.mask, total)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(0, 2**16),
       st.sampled_from(["abs", "signed"]))
def test_one_sort_serves_all_budgets(rows, dim, seed, order_kind):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((rows, dim)).round(1)  # rounding makes ties
    order = PruneOrder(scores, order_kind)
    key = np.abs(scores) if order_kind == "abs" else scores
    cursor = order.cursor()
    previous = np.zeros_like(scores, dtype=bool)
    for kept in range(order.total + 1):
        mask = order.mask(kept)
        assert mask.sum() == kept
        assert np.all(mask >= previous)  # nested: a bigger budget keeps a superset
        if 0 < kept < order.total:  # every kept entry ranks at least as high as every pruned one
            assert key[mask].min() >= key[~mask].max()
        previous = mask
    for kept in rng.permutation(order.total + 1):
        assert np.array_equal(cursor.move(int(kept)), order.mask(int(kept)))


def test_signed_prunes_harmful_entries_first_and_abs_keeps_them():
    scores = np.array([[-5.0, 0.1, 3.0, -0.2]])
    assert PruneOrder(scores, "abs").mask(2).tolist() == [[True, False, True, False]]
    assert PruneOrder(scores, "signed").mask(2).tolist() == [[False, True, True, False]]


def test_order_rejects_nan_scores_bad_order_and_bad_cuts():
    scores = np.ones((3, 2))
    scores[1, 1] = np.nan
    with pytest.raises(ScoreError, match="row 1, column 1"):
        PruneOrder(scores)
    with pytest.raises(ScoreError, match="unknown order"):
        PruneOrder(np.ones((3, 2)), "descending")
    with pytest.raises(ScoreError, match="2-D"):
        PruneOrder(np.ones(3))
    with pytest.raises(BudgetError, match=r"\[0, 6\]"):
        PruneOrder(np.ones((3, 2))).mask(7)
