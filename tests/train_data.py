"""Tiny learnable prepared datasets for the model/training tests (written with write_prepared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shaver.data.store import PreparedDataset, write_prepared

FIELD_DIMS = (12, 9, 7, 5)


def make_learnable(out: Path, rows: int = 4000, seed: int = 0,
                   field_dims=FIELD_DIMS) -> PreparedDataset:
    """Labels from a hidden first-order + one-interaction logistic model (AUC ~ 0.9)."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]])
    local = np.stack([rng.integers(0, d, rows) for d in field_dims], axis=1)
    ids = local + offsets
    weights = rng.normal(0, 1.5, sum(field_dims))
    inter = rng.normal(0, 1.5, (field_dims[0], field_dims[1]))
    logit = weights[ids].sum(1) + inter[local[:, 0], local[:, 1]]
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cut1, cut2 = int(rows * 0.8), int(rows * 0.9)
    row_no = np.arange(rows, dtype=np.int64)
    splits = {"train": (ids[:cut1], labels[:cut1], row_no[:cut1]),
              "val": (ids[cut1:cut2], labels[cut1:cut2], row_no[cut1:cut2]),
              "test": (ids[cut2:], labels[cut2:], row_no[cut2:])}
    names = [f"f{i}" for i in range(len(field_dims))]
    vocab = {n: [f"{n}_{j}" for j in range(d)] for n, d in zip(names, field_dims)}
    freq = np.bincount(ids[:cut1].reshape(-1), minlength=sum(field_dims))
    return write_prepared(out, field_names=names, vocabularies=vocab, splits=splits,
                          frequencies=freq)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train faster on one thread (and do not fight other tests for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
