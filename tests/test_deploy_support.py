"""Tiny pruned models shared by the deploy/runtime tests (this module holds no tests)."""

from __future__ import annotations

import numpy as np
import torch

from shaver.models.registry import build_model
from shaver.table.mask import MaskedEmbedding

FIELD_DIMS = [5, 300, 7, 40]
#: Keep probability per field: a spread that makes each field pick a different layout.
KEEP = [0.9, 0.3, 0.02, 0.6]
MODEL_KWARGS = {
    "lr": {}, "fm": {}, "deepfm": {"mlp_dims": [32, 16]},
    "dcn-v2": {"mlp_dims": [16], "cross_layers": 2},
    "dcn-mix": {"mlp_dims": [16], "cross_layers": 2, "rank": 4, "num_experts": 2},
}


def offsets(field_dims=FIELD_DIMS) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(field_dims)[:-1]]).astype(np.int64)


def random_mask(field_dims, dim, keep, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    per_row = np.repeat(np.asarray(keep, dtype=float), field_dims)[:, None]
    return rng.random((sum(field_dims), dim)) < per_row


def pruned_model(name="deepfm", *, field_dims=FIELD_DIMS, keep=KEEP, seed=0, mask=None,
                 embed_dim=None, layout=None):
    """An eval-mode model of the registry with a MaskedEmbedding, random BN statistics,
    a random per-field codebook and a kept entry that is exactly 0 (row 0, column 0);
    ``layout``: its bags (shaver.layout JSON), if any."""
    torch.manual_seed(seed)
    kwargs = dict(MODEL_KWARGS[name])
    if embed_dim is not None:
        kwargs["embed_dim"] = embed_dim
    if layout is not None:
        kwargs["layout"] = layout
    model = build_model(name, field_dims, **kwargs).eval()
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_(generator=gen)
            module.running_var.uniform_(0.5, 2.0, generator=gen)
        if hasattr(module, "linear") and hasattr(module.linear, "weight"):
            torch.nn.init.normal_(module.linear.weight.weight, generator=gen)
    n, d = model.embedding.weight.shape
    if mask is None:
        mask = random_mask(field_dims, d, keep, seed)
    weight = model.embedding.weight.detach().clone()
    weight[0, 0] = 0.0
    mask = mask.copy()
    mask[0, 0] = True
    codebook = torch.randn(len(field_dims), d, generator=gen) + 3.0
    model.embedding = MaskedEmbedding(weight, mask, codebook, field_dims)
    return model, mask


def random_ids(field_dims=FIELD_DIMS, batch=16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    local = np.stack([rng.integers(0, f, batch) for f in field_dims], axis=1)
    return local + offsets(field_dims)


def torch_proba(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(torch.as_tensor(x))).numpy()
