"""THE budget type (units, one parser, labels that parse back, validation, resolution), the
one binary search of byte budgets, and the sort-once pruning order."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shaver.errors import BudgetError
from shaver.table.budget import (
    KINDS,
    Budget,
    as_budgets,
    largest_fitting,
    parse_budget_list,
    parse_bytes,
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
    ("12000", Budget("params", 12000)),
    ("2MiB", Budget("bytes", 2 * 2**20)),
    ("500KB", Budget("bytes", 500_000)),
    ("500 kb", Budget("bytes", 500_000)),
    ("123456B", Budget("bytes", 123456)),
    ("1.5KiB", Budget("bytes", 1536)),
    ("1/16", Budget("table_bytes", Fraction(1, 16))),
    (" 1 / 64 ", Budget("table_bytes", Fraction(1, 64))),
    ("1/1", Budget("table_bytes", Fraction(1, 1))),
    ("table_bytes=40KiB", Budget("table_bytes", 40 * 1024)),
    ("table_bytes=1/16", Budget("table_bytes", Fraction(1, 16))),
    ("table_bytes=300", Budget("table_bytes", 300)),
    ("bytes=4096", Budget("bytes", 4096)),
    ("params=7", Budget("params", 7)),
    ("sparsity=0.2", Budget("sparsity", 0.2)),
    ("sparsity=1", Budget("sparsity", 1.0)),
])
def test_parse_strings(text, expected):
    got = Budget.parse(text)
    assert got == expected and type(got.value) is type(expected.value)
    back = Budget.parse(expected.label)
    assert back == expected and type(back.value) is type(expected.value)


@pytest.mark.parametrize("budget, label", [
    (Budget.sparsity(0.95), "sparsity=0.95"), (Budget.sparsity(0), "sparsity=0"),
    (Budget.params(12000), "params=12000"), (Budget.bytes_("2MiB"), "bytes=2097152"),
    (Budget.table_bytes("1/16"), "table_bytes=1/16"),
    (Budget.table_bytes("1/1"), "table_bytes=1/1"),  # not "=1": that is one byte
    (Budget.table_bytes("40KiB"), "table_bytes=40960"),
    (Budget.sparsity(0.123456789), "sparsity=0.123456789"),  # not rounded to 6 digits
])
def test_labels(budget, label):
    assert budget.label == label
    assert Budget.parse(label).to_json() == budget.to_json()


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.floats(0, 1).map(Budget.sparsity),
    st.integers(0, 10**12).map(Budget.params),
    st.integers(1, 10**12).map(Budget.bytes_),
    st.integers(1, 10**12).map(Budget.table_bytes),
    st.integers(1, 10**6).map(lambda n: Budget.table_bytes(f"1/{n}"))))
def test_every_label_parses_back_to_the_same_budget(budget):
    back = Budget.parse(budget.label)
    assert back.kind == budget.kind and back.value == budget.value
    assert type(back.value) is type(budget.value)  # 1/1 of the table is not 1 byte
    assert back.label == budget.label and back.to_json() == budget.to_json()
    if budget.is_bytes:
        assert back.byte_limit(10**6) == budget.byte_limit(10**6)
    else:
        assert back.kept_entries(10**12) == budget.kept_entries(10**12)


@pytest.mark.parametrize("bad, message", [
    (1.5, "sparsity must be a fraction in [0, 1], got 1.5"),
    (-0.1, "sparsity must be a fraction in [0, 1], got -0.1"),
    (float("nan"), "sparsity must be a fraction in [0, 1], got nan"),
    ("101%", "sparsity must be a fraction in [0, 1], got 1.01"),
    ("inf", "sparsity must be a fraction in [0, 1], got 'inf'"),
    (-3, "a params budget must be >= 0, got -3"),
    (True, "a budget cannot be a bool, got True"),
    ("half", "cannot read a sparsity from 'half': expected a fraction in [0, 1] such as 0.95, "
             "or a percentage such as 95%"),
    ("volume=3", "unknown budget kind 'volume' in 'volume=3': expected one of sparsity, "
                 "params, bytes, table_bytes"),
    ("params=1.0", "a params budget is an integer count of kept entries, got '1.0'"),
    ("bytes=2 parsecs", "cannot read a byte size from '2 parsecs': expected e.g. 2MiB, 500KB, "
                        "123456B (units B, KB, KIB, MB, MIB, GB, GIB)"),
    ("bytes=0B", "a bytes budget must be > 0, got 0"),
    ("0B", "a bytes budget must be > 0, got 0"),
    ("table_bytes=0", "a table_bytes budget must be > 0, got 0"),
    ("1/0", "table budget '1/0': 1/0 is not a fraction"),
    ("table_bytes=1/0", "table budget '1/0': 1/0 is not a fraction"),
    ("table_bytes=lots", "cannot read a byte size from 'lots': expected e.g. 2MiB, 500KB, "
                         "123456B (units B, KB, KIB, MB, MIB, GB, GIB)"),
    (None, "cannot read a budget from NoneType None"),
])
def test_parse_rejects_with_the_exact_message(bad, message):
    with pytest.raises(BudgetError) as info:
        Budget.parse(bad)
    assert str(info.value) == message


def test_table_fractions_resolve_against_the_fp32_table():
    assert Budget.parse("1/16").byte_limit(1600) == 100
    assert Budget.parse("1/3").byte_limit(100) == 33  # floor: never above the fraction
    assert Budget.parse("1/1").byte_limit(144) == 144
    assert Budget.parse("table_bytes=40KiB").byte_limit(1) == 40960  # absolute: table-free
    assert Budget.parse("2MiB").byte_limit(1) == 2 * 2**20
    with pytest.raises(BudgetError) as info:
        Budget.sparsity(0.5).byte_limit(100)
    assert str(info.value) == "budget sparsity=0.5 is not a byte budget"
    with pytest.raises(BudgetError) as info:
        Budget("table_bytes", Fraction(2, 3))
    assert str(info.value) == "a table budget fraction is 1/N with N >= 1, got 2/3"
    assert [Budget.parse(s).is_bytes for s in ("0.5", "7", "1KiB", "1/8")] == \
        [False, False, True, True]
    assert Budget.table_bytes("1/16").to_json() == {"kind": "table_bytes", "value": "1/16",
                                                     "label": "table_bytes=1/16"}


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
    # each CLI flag gives its units: "1" is a sparsity of 1 under --sparsity, a byte otherwise
    assert [parse_budget_list("1", kind)[0] for kind in KINDS] == [
        Budget.sparsity(1.0), Budget.params(1), Budget.bytes_(1), Budget.table_bytes(1)]
    assert parse_budget_list("1/16,40KiB", "table_bytes") == [
        Budget.table_bytes("1/16"), Budget.table_bytes(40960)]
    with pytest.raises(BudgetError, match="unknown budget kind 'table-bytes'"):
        parse_budget_list("1", "table-bytes")
    with pytest.raises(BudgetError, match="empty"):
        parse_budget_list(" , ", "params")
    assert as_budgets([0.5, 3, "1KiB", "1/16"]) == [Budget.sparsity(0.5), Budget.params(3),
                                                    Budget.bytes_(1024),
                                                    Budget.table_bytes("1/16")]
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
    for budget in (Budget.bytes_(100), Budget.table_bytes("1/4")):
        with pytest.raises(BudgetError, match="resolved by the size oracle"):
            budget.kept_entries(144)


def fake_size(mask: np.ndarray) -> int:
    """A monotone artifact-size model: fixed 100 + 4 bytes per kept value + 1 per touched row."""
    return 100 + 4 * int(mask.sum()) + int(mask.any(axis=1).sum())


def test_largest_fitting_is_the_largest_cut_that_fits():
    rng = np.random.default_rng(0)
    order = PruneOrder(rng.standard_normal((30, 4)))
    total = 120
    for limit in (100, 101, 150, 333, 700):
        calls = []

        def fits(k, limit=limit, calls=calls):
            calls.append(k)
            return fake_size(order.mask(k)) <= limit

        kept = largest_fitting(total, fits)
        assert fake_size(order.mask(kept)) <= limit
        if kept < total:
            assert fake_size(order.mask(kept + 1)) > limit
        assert len(calls) <= 2 + int(np.ceil(np.log2(total)))  # one binary search
    assert largest_fitting(total, lambda k: True) == total
    assert largest_fitting(total, lambda k: fake_size(order.mask(k)) <= 99) is None
    assert largest_fitting(0, lambda k: k == 0) == 0


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
