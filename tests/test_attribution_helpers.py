"""Tiny datasets and models shared by the attribution tests (plus checks of the helpers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shaver.data.store import write_prepared
from shaver.models.base import CTRModel, check_model_interface

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DIMS = [3, 4, 2]
#: Local id of each field that no row of the tiny dataset uses (null players).
UNUSED_LOCAL = [2, 3, 1]


def tiny_dataset(path, dims=DIMS, rows=60, seed=0):
    """A prepared dataset whose last local id of each field never occurs (null rows)."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(dims)[:-1]])
    local = np.stack([rng.integers(0, d - 1, rows) for d in dims], axis=1)
    ids = local + offsets
    labels = (rng.random(rows) < 0.4).astype(np.float32)
    names = [f"f{i}" for i in range(len(dims))]
    vocab = {f: ["<OOV>"] + [f"{f}v{j}" for j in range(1, d)] for f, d in zip(names, dims)}
    tr, va = int(rows * 0.7), int(rows * 0.85)
    splits = {"train": (ids[:tr], labels[:tr], np.arange(tr)),
              "val": (ids[tr:va], labels[tr:va], np.arange(tr, va)),
              "test": (ids[va:], labels[va:], np.arange(va, rows))}
    freq = np.bincount(ids[:tr].ravel(), minlength=sum(dims))
    return write_prepared(path, field_names=names, vocabularies=vocab, splits=splits,
                          frequencies=freq)


def quiet_attribute(model, ds, **kw):
    """``attribute`` on CPU in fp32 (exact credits), quiet, seed 3, batches of 8, no stopping
    rule (the paper's rule with no tolerance), the paper's estimator (plain walks) over the
    paper's D (train+val); ``kw`` overrides."""
    from shaver.attribution.api import attribute

    opts = dict(stop="sage", tolerance=None, batch_size=8, quiet=True, seed=3, device="cpu",
                dtype="fp32", data="train+val", control_variate=False)
    opts.update(kw)
    return attribute(model, ds, **opts)


class TanhNet(CTRModel):
    """A model no fast path knows: logit = v . tanh(W emb.flatten + b) + first order."""

    name = "tanh-net"

    def __init__(self, field_dims, embed_dim=2, hidden=5, seed=0):
        super().__init__(field_dims, embed_dim)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.embedding.weight.copy_(torch.randn(self.num_features, embed_dim, generator=gen))
        self.inner = nn.Linear(self.num_fields * embed_dim, hidden)
        self.outer = nn.Linear(hidden, 1)
        self.first = nn.Embedding(self.num_features, 1)
        for p in (*self.inner.parameters(), *self.outer.parameters(), self.first.weight):
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen))

    def head(self, emb, x):
        h = torch.tanh(self.inner(emb.flatten(1)))
        return self.outer(h).squeeze(1) + self.first(x).sum((1, 2))


def registry_model(name, field_dims=DIMS, embed_dim=2, seed=0, layout=None, **extra):
    """A small registry model with random weights and non-trivial batch-norm statistics
    (``layout``: a :class:`shaver.layout.FieldLayout` of bags, or None)."""
    from shaver.models.registry import build_model

    torch.manual_seed(seed)  # the registry's initialisers draw from the global RNG
    if name in ("deepfm", "dcn-v2", "dcn-mix"):
        extra.setdefault("mlp_dims", [6, 5])
    if name == "dcn-mix":
        extra.setdefault("num_experts", 2)
        extra.setdefault("rank", 3)
    model = build_model(name, field_dims, embed_dim=embed_dim,
                        layout=None if layout is None else layout.to_json(), **extra)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=gen))
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen))
                mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
    return model.eval()


MODEL_NAMES = ["lr", "fm", "deepfm", "dcn-v2", "dcn-mix", "tanh-net"]


def any_model(name, field_dims=DIMS, embed_dim=2, seed=0):
    if name == "tanh-net":
        return TanhNet(field_dims, embed_dim, seed=seed).eval()
    return registry_model(name, field_dims, 1 if name == "lr" else embed_dim, seed)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_helper_models_follow_the_interface(name):
    model = any_model(name)
    check_model_interface(model)
    x = torch.tensor([[0, 3, 7], [1, 4, 8]])
    assert model(x).shape == (2,)


def test_tiny_dataset_leaves_null_rows(tmp_path):
    ds = tiny_dataset(tmp_path / "d")
    x, _ = ds.arrays("all")
    for f, (off, unused) in enumerate(zip(ds.offsets, UNUSED_LOCAL)):
        assert not (x[:, f] == off + unused).any()
