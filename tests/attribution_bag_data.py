"""Bag fixtures shared by the attribution and pruning tests: tiny models with a mean bag and
a weighted sum bag, raw batches with duplicates / pads / zero weights, and a small prepared
dataset (the logic of the synthetic bag generator: a user, a mean bag of genres, a city, a
weighted sum bag of tags)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shaver.data.store import write_prepared
from shaver.layout import Bag, FieldLayout
from test_attribution_helpers import registry_model

#: fields: 0 single (3 rows), 1 mean bag <= 3 (4 rows), 2 weighted sum bag <= 2 (3 rows)
BAG_DIMS = [3, 4, 3]
BAG_LAYOUT = FieldLayout(3, (Bag(1, 3, "mean"), Bag(2, 2, "sum", weighted=True)))
BAG_MODELS = ["lr", "fm", "deepfm", "dcn-v2", "dcn-mix"]


def bag_model(name: str, embed_dim: int = 2, seed: int = 0, dims=BAG_DIMS,
              layout: FieldLayout = BAG_LAYOUT, **extra) -> nn.Module:
    """A registry model with bags, random weights and non-trivial batch-norm statistics."""
    return registry_model(name, dims, 1 if name == "lr" else embed_dim, seed, layout, **extra)


def bag_batch(batch: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw rows of :data:`BAG_LAYOUT` (x (B, 6), y (B,), w (B, 6)): random bag lengths (empty
    bags included), repeated ids in the mean bag, zero weights in the sum bag. Row 0 is fixed:
    genre 0 twice and genre 2, one tag of weight 0.5 and one of weight 0."""
    gen = torch.Generator().manual_seed(seed)
    offs = np.concatenate([[0], np.cumsum(BAG_DIMS)[:-1]])
    x = torch.full((batch, 6), -1, dtype=torch.long)
    w = torch.ones(batch, 6)
    x[:, 0] = torch.randint(0, BAG_DIMS[0], (batch,), generator=gen)
    for b in range(batch):
        n = int(torch.randint(0, 4, (1,), generator=gen))
        x[b, 1:1 + n] = torch.randint(0, 2, (n,), generator=gen) + offs[1]  # few ids: repeats
        k = int(torch.randint(0, 3, (1,), generator=gen))
        x[b, 4:4 + k] = torch.randint(0, BAG_DIMS[2], (k,), generator=gen) + offs[2]
        w[b, 4:6] = torch.rand(2, generator=gen) * 2 * (torch.rand(2, generator=gen) > 0.2)
    x[0, 1:4] = torch.tensor([0, 0, 2]) + offs[1]
    x[0, 4:6] = torch.tensor([0, 1]) + offs[2]
    w[0, 4:6] = torch.tensor([0.5, 0.0])
    w[x < 0] = 0.0
    y = (torch.rand(batch, generator=gen) < 0.5).float()
    return x, y, w


def write_bag_dataset(out, rows: int = 600, seed: int = 0, weighted: bool = True):
    """A prepared dataset of 4 fields: user (50), genres (mean bag <= 4 of 20), city (10),
    tags (weighted sum bag <= 3 of 15; with ``weighted=False`` a single field), with
    frequencies counted on train (every bag value)."""
    rng = np.random.default_rng(seed)
    dims = [50, 20, 10, 15]
    offs = np.concatenate([[0], np.cumsum(dims)[:-1]])
    bags = (Bag(1, 4, "mean"),) + ((Bag(3, 3, "sum", weighted=True),) if weighted else ())
    lay = FieldLayout(4, bags)
    beta = rng.normal(size=sum(dims))
    splits, bagd = {}, {}
    freq = np.zeros(sum(dims), np.int64)
    for split, n in (("train", rows), ("val", rows // 5), ("test", rows // 5)):
        user = rng.integers(0, dims[0], n) + offs[0]
        city = rng.integers(0, dims[2], n) + offs[2]
        gl = rng.integers(0, 5, n)
        goff = np.concatenate([[0], np.cumsum(gl)])
        gv = rng.integers(0, dims[1], goff[-1]) + offs[1]
        tl = rng.integers(0, 4, n)
        toff = np.concatenate([[0], np.cumsum(tl)])
        tv = rng.integers(0, dims[3], toff[-1]) + offs[3]
        tw = rng.uniform(0.2, 2.0, toff[-1]).astype(np.float32)
        gsum = np.add.reduceat(np.append(beta[gv], 0), goff[:-1]) if len(gv) else 0
        logit = beta[user] + beta[city] + np.where(gl > 0, gsum / np.maximum(gl, 1), 0)
        y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
        if weighted:
            ids = np.stack([user, city], 1)
            bagd[split] = {1: (goff, gv), 3: (toff, tv, tw)}
        else:
            ids = np.stack([user, city, rng.integers(0, dims[3], n) + offs[3]], 1)
            bagd[split] = {1: (goff, gv)}
        splits[split] = (ids, y, np.arange(n))
        if split == "train":
            for col in ids.T:
                freq += np.bincount(col, minlength=sum(dims))
            freq += np.bincount(gv, minlength=sum(dims))
            if weighted:
                freq += np.bincount(tv, minlength=sum(dims))
    vocab = {f"f{i}": [str(j) for j in range(d)] for i, d in enumerate(dims)}
    return write_prepared(out, field_names=list(vocab), vocabularies=vocab, splits=splits,
                          frequencies=freq, layout=lay, bags=bagd)
