"""Models with bags (multi-valued fields): EmbeddingBag semantics, the same pooling in numpy
and torch, and a bag of one id is the single-valued field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from shaver.errors import ModelError
from shaver.layout import PAD, Bag, FieldLayout, pad_bags
from shaver.models.registry import MODEL_NAMES, build_model

DIMS = [5, 7, 4, 6]
LAYOUT = FieldLayout(4, (Bag(1, 3, "mean"), Bag(3, 2, "sum", weighted=True)))
SMALL = {"deepfm": {"mlp_dims": [8]}, "dcn-v2": {"mlp_dims": [8]},
         "dcn-mix": {"mlp_dims": [8], "rank": 4}}


def batch(rows: int = 32, seed: int = 0, layout: FieldLayout = LAYOUT):
    """Random slots: bag lengths 0..max_len (empty bags included), weights in (0, 2)."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(DIMS)[:-1]])
    x = np.full((rows, layout.num_slots), PAD, dtype=np.int64)
    w = np.ones((rows, layout.num_slots), dtype=np.float32)
    for f in range(layout.num_fields):
        lo, hi = layout.starts[f], layout.starts[f + 1]
        if f not in layout.bag_of:
            x[:, lo] = rng.integers(0, DIMS[f], rows) + offsets[f]
            continue
        lengths = rng.integers(0, hi - lo + 1, rows)
        for r, n in enumerate(lengths):
            x[r, lo:lo + n] = rng.integers(0, DIMS[f], n) + offsets[f]
            w[r, lo:lo + n] = rng.uniform(0.1, 2.0, n)
    return torch.from_numpy(x), torch.from_numpy(w)


def model(name: str, layout=LAYOUT, seed: int = 0):
    return build_model(name, DIMS, layout=layout.to_json(), seed=seed,
                       **SMALL.get(name, {})).eval()


def test_pooling_is_embedding_bag():
    """Sum bags with per-value weights and mean bags equal torch's embedding_bag (empty bags
    give zeros)."""
    m = model("fm")
    x, w = batch()
    emb, coef = m.pooled(m.embed(x), x, w)
    table = m.embedding.weight
    for b, mode in ((LAYOUT.bags[0], "mean"), (LAYOUT.bags[1], "sum")):
        lo, hi = LAYOUT.starts[b.field], LAYOUT.starts[b.field + 1]
        ids, valid = x[:, lo:hi], x[:, lo:hi] >= 0
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), valid.sum(1).cumsum(0)[:-1]])
        weights = w[:, lo:hi][valid] if b.weighted else None
        want = F.embedding_bag(ids[valid], table, offsets, mode=mode,
                               per_sample_weights=weights)
        assert torch.allclose(emb[:, b.field], want, atol=1e-6)


def test_duplicate_ids_count_twice_in_the_mean():
    """A repeated id weighs twice in a mean bag; weights of a bag that is not weighted are
    ignored."""
    m = model("deepfm")
    a, b = 5 + 1, 5 + 3  # two ids of field 1
    x = torch.tensor([[0, a, a, b, 12, 16, PAD], [0, a, b, PAD, 12, 16, PAD]])
    w = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 2, 5, 0, 1, 1, 0]], dtype=torch.float32)
    pooled, _ = m.pooled(m.embed(x), x, w)
    table = m.embedding.weight
    assert torch.allclose(pooled[0, 1], (2 * table[a] + table[b]) / 3, atol=1e-6)
    assert torch.allclose(pooled[1, 1], (table[a] + table[b]) / 2, atol=1e-6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_bag_of_one_id_is_a_single_field(name):
    """Bags holding exactly one id of weight 1 pool to that id's embedding (and first-order
    weight): the bag model equals the single-valued model with the same weights."""
    bagged, single = model(name), build_model(name, DIMS, seed=1, **SMALL.get(name, {})).eval()
    single.load_state_dict(bagged.state_dict())
    x1 = torch.stack([torch.randint(o, o + d, (16,)) for o, d in
                      zip(np.concatenate([[0], np.cumsum(DIMS)[:-1]]), DIMS)], dim=1)
    xs = torch.full((16, LAYOUT.num_slots), PAD, dtype=torch.long)
    xs[:, torch.from_numpy(LAYOUT.starts[:-1])] = x1
    assert torch.allclose(bagged(xs), single(x1), atol=1e-5)
    assert torch.allclose(bagged(xs, torch.ones(xs.shape)), single(x1), atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_round_trip_keeps_the_layout(name):
    m = model(name)
    assert m.config()["layout"] == LAYOUT.to_json()
    again = build_model(m.config())
    again.load_state_dict(m.state_dict())
    x, w = batch()
    assert torch.equal(again.eval()(x, w), m(x, w))
    assert "layout" not in build_model(name, DIMS, **SMALL.get(name, {})).config()


def test_numpy_pooling_equals_torch():
    m = model("deepfm")
    x, w = batch(64, seed=3)
    values = torch.randn(64, LAYOUT.num_slots, 5)
    coef = m.coefficients(x, w)
    want = m.pooling(values, coef).numpy()
    got_coef = LAYOUT.coefficients(x.numpy(), w.numpy())
    assert np.allclose(got_coef, coef.numpy(), atol=1e-7)
    assert np.allclose(LAYOUT.pool(values.numpy(), got_coef), want, atol=1e-6)


def test_pad_bags_keeps_list_order():
    ids, w = pad_bags(np.array([0, 2, 2, 5]), np.array([4, 3, 9, 8, 7]), 4,
                      np.array([1, 2, 3, 4, 5], np.float32))
    assert ids.tolist() == [[4, 3, -1, -1], [-1] * 4, [9, 8, 7, -1]]
    assert w.tolist() == [[1, 2, 0, 0], [0] * 4, [3, 4, 5, 0]]


@pytest.mark.parametrize("layout, message", [
    ([{"field": 9, "max_len": 2}], "bag fields [9] must be distinct, sorted and in 0..3"),
    ([{"field": 1, "max_len": 0}], "max_len >= 1"),
    ([{"field": 1, "max_len": 2, "pooling": "max"}], "pooling one of sum, mean"),
    ({"field": 1}, "expected a list of bags"),
])
def test_bad_layout_is_named(layout, message):
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_model("fm", DIMS, layout=layout)
