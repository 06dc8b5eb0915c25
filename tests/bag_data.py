"""Tiny learnable prepared datasets with bags (multi-valued fields), written with
write_prepared: a single field, a mean bag of <= 4 ids, a single field, a weighted sum bag
of <= 3 ids (lengths 0..max_len, so empty bags occur)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shaver.data.store import PreparedDataset, write_prepared
from shaver.layout import Bag, FieldLayout

FIELD_DIMS = (12, 9, 7, 6)
LAYOUT = FieldLayout(4, (Bag(1, 4, "mean"), Bag(3, 3, "sum", weighted=True)))


def _bag(rng, rows: int, dim: int, offset: int, max_len: int, weighted: bool):
    lengths = rng.integers(0, max_len + 1, rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = rng.integers(0, dim, int(offsets[-1])) + offset
    weights = rng.uniform(0.25, 2.0, len(values)).astype(np.float32) if weighted else None
    return offsets, values, weights


def make_bags(out: Path, rows: int = 4000, seed: int = 0,
              layout: FieldLayout = LAYOUT) -> PreparedDataset:
    """Labels from a hidden logistic model that pools the bags as the layout says (AUC
    ~0.85): first-order weights of every id, mean / weighted sums over each bag."""
    rng = np.random.default_rng(seed)
    dims = FIELD_DIMS
    offsets = np.concatenate([[0], np.cumsum(dims)[:-1]])
    beta = rng.normal(0, 1.5, sum(dims))
    singles = [f for f in range(len(dims)) if f not in layout.bag_of]
    ids = np.stack([rng.integers(0, dims[f], rows) + offsets[f] for f in singles], axis=1)
    logit = beta[ids].sum(1)
    bags = {}
    for b in layout.bags:
        off, values, weights = _bag(rng, rows, dims[b.field], offsets[b.field], b.max_len,
                                    b.weighted)
        w = np.ones(len(values)) if weights is None else weights
        sums = np.zeros(rows)
        total = np.zeros(rows)
        row = np.repeat(np.arange(rows), np.diff(off))
        np.add.at(sums, row, beta[values] * w)
        np.add.at(total, row, w)
        if b.pooling == "mean":
            sums = np.divide(sums, total, out=np.zeros(rows), where=total > 0)
        logit += 2 * sums
        bags[b.field] = (off, values, weights)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cuts = {"train": (0, int(rows * 0.8)), "val": (int(rows * 0.8), int(rows * 0.9)),
            "test": (int(rows * 0.9), rows)}
    splits, split_bags = {}, {}
    for split, (lo, hi) in cuts.items():
        splits[split] = (ids[lo:hi], labels[lo:hi], np.arange(lo, hi, dtype=np.int64))
        split_bags[split] = {}
        for f, (off, values, weights) in bags.items():
            a, z = off[lo], off[hi]
            part = (off[lo:hi + 1] - a, values[a:z])
            split_bags[split][f] = part + (() if weights is None else (weights[a:z],))
    names = [f"f{i}" for i in range(len(dims))]
    vocab = {n: [f"{n}_{j}" for j in range(d)] for n, d in zip(names, dims)}
    lo, hi = cuts["train"]
    seen = [ids[lo:hi].reshape(-1)] + [v[off[lo]:off[hi]] for off, v, _ in bags.values()]
    freq = np.bincount(np.concatenate(seen), minlength=sum(dims))
    return write_prepared(out, field_names=names, vocabularies=vocab, splits=splits,
                          frequencies=freq, layout=layout, bags=split_bags)
