"""The pytorch-fm adapter, against a minimal pytorch-fm style DeepFM written as pytorch-fm does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shaver.errors import ModelError
from shaver.models.adapter import TorchFMAdapter
from shaver.models.base import calibration_of, check_model_interface, set_calibration
from train_data import one_thread  # noqa: F401


class FeaturesEmbedding(nn.Module):  # as in torchfm/layer.py
    def __init__(self, field_dims, embed_dim):
        super().__init__()
        self.embedding = nn.Embedding(sum(field_dims), embed_dim)
        self.offsets = np.array((0, *np.cumsum(field_dims)[:-1]), dtype=np.int64)

    def forward(self, x):
        return self.embedding(x + x.new_tensor(self.offsets).unsqueeze(0))


class FeaturesLinear(nn.Module):
    def __init__(self, field_dims):
        super().__init__()
        self.fc = nn.Embedding(sum(field_dims), 1)
        self.bias = nn.Parameter(torch.zeros((1,)))
        self.offsets = np.array((0, *np.cumsum(field_dims)[:-1]), dtype=np.int64)

    def forward(self, x):
        x = x + x.new_tensor(self.offsets).unsqueeze(0)
        return torch.sum(self.fc(x), dim=1) + self.bias


class TinyDeepFM(nn.Module):
    def __init__(self, field_dims, embed_dim=3):
        super().__init__()
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.mlp = nn.Sequential(nn.Linear(len(field_dims) * embed_dim, 4), nn.ReLU(),
                                 nn.Linear(4, 1))

    def forward(self, x):
        e = self.embedding(x)
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1, keepdim=True)
        return torch.sigmoid((self.linear(x) + fm + self.mlp(e.flatten(1))).squeeze(1))


FIELD_DIMS = [3, 4, 2]


def test_adapter_matches_the_wrapped_model():
    torch.manual_seed(0)
    inner = TinyDeepFM(FIELD_DIMS).eval()
    model = TorchFMAdapter(inner)
    check_model_interface(model)
    assert model.field_dims == FIELD_DIMS and model.embedding is inner.embedding.embedding
    local = torch.tensor([[0, 1, 1], [2, 3, 0], [1, 0, 1]])
    x = model.to_global(local)
    assert torch.allclose(torch.sigmoid(model(x)), inner(local), atol=1e-6)


def test_head_uses_the_given_embedding_block():
    torch.manual_seed(1)
    inner = TinyDeepFM(FIELD_DIMS).eval()
    model = TorchFMAdapter(inner)
    x = model.to_global(torch.tensor([[0, 1, 1], [2, 3, 0]]))
    emb = model.embedding(x).detach()
    before = model.head(emb, x)
    zeroed = model.head(torch.zeros_like(emb), x)
    assert not torch.allclose(before, zeroed)  # the block given is the block used
    with torch.no_grad():
        inner.embedding.embedding.weight.zero_()
    assert torch.allclose(model.head(emb, x), before)
    assert isinstance(inner.embedding, FeaturesEmbedding)  # restored after the call


def test_logit_output_and_bad_models():
    class Logits(TinyDeepFM):
        def forward(self, x):
            return torch.logit(super().forward(x))

    inner = Logits(FIELD_DIMS).eval()
    model = TorchFMAdapter(inner, output="logit")
    local = torch.tensor([[1, 2, 0]])
    assert torch.allclose(model(model.to_global(local)), inner(local), atol=1e-5)
    with pytest.raises(ModelError, match="not pytorch-fm style"):
        TorchFMAdapter(nn.Linear(2, 2))
    with pytest.raises(ModelError, match="output must be"):
        TorchFMAdapter(inner, output="odds")
    inner.embedding.offsets = np.array([0, 5, 2])
    with pytest.raises(ModelError, match="do not describe"):
        TorchFMAdapter(inner)
    with pytest.raises(ModelError, match="no registry config"):
        TorchFMAdapter(TinyDeepFM(FIELD_DIMS)).config()


def test_an_adapted_model_trains_in_memory(tmp_path):
    from shaver.train.loop import fit
    from train_data import make_learnable

    data = make_learnable(tmp_path / "data", rows=2000)
    torch.manual_seed(0)
    model = TorchFMAdapter(TinyDeepFM(data.field_dims, embed_dim=4))
    result = fit(model, data, epochs=8, lr=5e-2, batch_size=256, quiet=True, device="cpu",
                 patience=None)
    assert result.test["auc"] > 0.75, result.test
    with pytest.raises(ModelError, match="no registry config"):
        fit(model, data, epochs=1, quiet=True, out_dir=tmp_path / "run")


def test_adapter_applies_a_calibration():
    torch.manual_seed(0)
    model = TorchFMAdapter(TinyDeepFM(FIELD_DIMS).eval())
    x = model.to_global(torch.tensor([[0, 1, 0], [2, 3, 1]]))
    keys = list(model.state_dict())
    with torch.no_grad():
        raw = model(x)
        set_calibration(model, 2.0, 0.5)
        torch.testing.assert_close(model(x), raw * 2.0 + 0.5, rtol=0, atol=0)
    assert calibration_of(model) == (2.0, 0.5) and list(model.state_dict()) == keys
