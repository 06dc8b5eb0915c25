"""Tiny hand-made models and datasets shared by the pruning tests (plus the mask tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from shaver.data.store import PreparedDataset, write_prepared
from shaver.errors import ModelError
from shaver.models.base import CTRModel
from shaver.table.mask import MaskedEmbedding, pack_mask, unpack_mask

torch.set_num_threads(1)

FIELD_DIMS = [3, 4, 2]
DIM = 4


class TinyModel(CTRModel):
    """First-order weights + a linear layer over the flattened embeddings (a DeepFM in small)."""

    name = "tiny"

    def __init__(self, field_dims=FIELD_DIMS, embed_dim: int = DIM, seed: int = 0):
        super().__init__(field_dims, embed_dim)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.embedding.weight.copy_(torch.randn(self.num_features, embed_dim, generator=gen))
        self.linear = nn.Embedding(self.num_features, 1)
        self.lin = nn.Linear(self.num_fields * embed_dim, 1)
        with torch.no_grad():
            self.linear.weight.copy_(0.1 * torch.randn(self.num_features, 1, generator=gen))
            self.lin.weight.copy_(torch.randn(1, self.num_fields * embed_dim, generator=gen))
            self.lin.bias.zero_()

    def head(self, emb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.lin(emb.flatten(1)).squeeze(1) + self.linear(x).sum((1, 2))

    def config(self) -> dict[str, Any]:
        return {"name": "tiny", "field_dims": self.field_dims, "embed_dim": self.embed_dim}


def build_tiny(config: dict[str, Any]) -> TinyModel:
    return TinyModel(config["field_dims"], config["embed_dim"])


def tiny_dataset(path: Path, rows: int = 300, seed: int = 0,
                 field_dims=FIELD_DIMS) -> PreparedDataset:
    """Labels drawn from a TinyModel(seed=seed+1) teacher (standardised logits, so both
    classes appear in every split and the data carry signal)."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]])
    local = np.stack([rng.integers(0, d, rows) for d in field_dims], axis=1)
    ids = (local + offsets).astype(np.int32)
    teacher = TinyModel(field_dims, DIM, seed=seed + 1).eval()
    with torch.no_grad():
        logits = teacher(torch.from_numpy(ids.astype(np.int64)))
        p = torch.sigmoid(2 * (logits - logits.mean()) / logits.std()).numpy()
    labels = (rng.random(rows) < p).astype(np.float32)
    cut1, cut2 = int(rows * 0.6), int(rows * 0.8)
    names = [f"f{i}" for i in range(len(field_dims))]
    freq = np.bincount(ids[:cut1].reshape(-1), minlength=sum(field_dims))
    splits = {s: (ids[a:b], labels[a:b], np.arange(a, b))
              for s, a, b in (("train", 0, cut1), ("val", cut1, cut2), ("test", cut2, rows))}
    vocab = {f: [f"v{j}" for j in range(d)] for f, d in zip(names, field_dims)}
    return write_prepared(path, field_names=names, vocabularies=vocab, splits=splits,
                          frequencies=freq)


def saved_run_with_random_phi(root: Path) -> Path:
    """A saved DeepFM run (MLP 8) on :func:`tiny_dataset`, with a random-phi codebook
    attribution beside it: what the CLI tests of prune and fleet start from."""
    from shaver.attribution.result import Attribution
    from shaver.models.registry import build_model
    from shaver.train.checkpoint import model_fingerprint, save_run

    dataset = tiny_dataset(root / "ds")
    torch.manual_seed(0)
    model = build_model("deepfm", FIELD_DIMS, embed_dim=DIM, mlp_dims=[8]).eval()
    run = save_run(root / "run", model, dataset=dataset, metrics={}, seed=0, train_config={})
    n = sum(FIELD_DIMS)
    phi = torch.from_numpy(np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32))
    Attribution(phi=phi, stderr=torch.zeros(n, DIM), count=5,
                codebook=torch.ones(len(FIELD_DIMS), DIM), placeholder="codebook",
                model_fingerprint=model_fingerprint(model),
                dataset_fingerprint=dataset.fingerprint,
                field_dims=FIELD_DIMS).save(run / "attribution-codebook.safetensors")
    return run


def random_ids(rows: int = 50, seed: int = 0, field_dims=FIELD_DIMS) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]])
    local = np.stack([rng.integers(0, d, rows) for d in field_dims], axis=1)
    return torch.from_numpy((local + offsets).astype(np.int64))


# -- mask tests ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (9, 4), (17, 3)])
def test_pack_unpack_round_trip(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.0, 0.3, 1.0):
        mask = rng.random(shape) < density
        packed = pack_mask(mask)
        assert packed.dtype == np.uint8 and packed.size == -(-mask.size // 8)
        assert np.array_equal(unpack_mask(packed, shape), mask)


def test_pack_mask_bit_order_is_little():
    mask = np.zeros((2, 5), bool)
    mask[0, 0] = True  # flat entry 0 -> bit 0 of byte 0
    mask[1, 4] = True  # flat entry 9 -> bit 1 of byte 1
    assert pack_mask(mask).tolist() == [1, 2]


def test_pack_unpack_reject_bad_input():
    with pytest.raises(ModelError, match="bool"):
        pack_mask(np.ones((2, 2), np.uint8))
    with pytest.raises(ModelError, match="needs 2"):
        unpack_mask(np.zeros(3, np.uint8), (3, 5))
    with pytest.raises(ModelError, match="uint8"):
        unpack_mask(np.zeros(2, np.int32), (3, 5))


def test_masked_embedding_matches_brute_force():
    n, d = sum(FIELD_DIMS), DIM
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(n, d, generator=gen)
    mask = torch.rand(n, d, generator=gen) < 0.5
    codebook = torch.randn(len(FIELD_DIMS), d, generator=gen)
    emb = MaskedEmbedding(weight, mask, codebook, FIELD_DIMS)
    x = random_ids(20)
    out = emb(x)
    field_of = np.repeat(np.arange(len(FIELD_DIMS)), FIELD_DIMS)
    for b in range(x.shape[0]):
        for f in range(x.shape[1]):
            r = int(x[b, f])
            for k in range(d):
                want = weight[r, k] if mask[r, k] else codebook[field_of[r], k]
                assert out[b, f, k] == want
    assert torch.equal(emb.weight[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(emb.effective_weight()[x], out)
    assert emb.kept == int(mask.sum())


def test_masked_embedding_gradient_reaches_only_kept_entries():
    n, d = sum(FIELD_DIMS), DIM
    mask = torch.rand(n, d, generator=torch.Generator().manual_seed(1)) < 0.5
    emb = MaskedEmbedding(torch.randn(n, d), mask, torch.randn(3, d), FIELD_DIMS)
    emb(random_ids(40)).sum().backward()
    assert torch.all(emb.weight.grad[~mask] == 0)
    assert torch.any(emb.weight.grad[mask] != 0)


def test_masked_embedding_rejects_bad_shapes():
    w = torch.zeros(9, 4)
    with pytest.raises(ModelError, match="weight has shape"):
        MaskedEmbedding(torch.zeros(8, 4), torch.ones(8, 4, dtype=torch.bool),
                        torch.zeros(3, 4), FIELD_DIMS)
    with pytest.raises(ModelError, match="mask must be bool"):
        MaskedEmbedding(w, torch.ones(9, 4), torch.zeros(3, 4), FIELD_DIMS)
    with pytest.raises(ModelError, match="codebook has shape"):
        MaskedEmbedding(w, torch.ones(9, 4, dtype=torch.bool), torch.zeros(2, 4), FIELD_DIMS)
