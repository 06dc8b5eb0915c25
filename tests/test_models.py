"""Models: shapes, gradient flow, brute-force references, config round trips, bad options."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from shaver.errors import ModelError
from shaver.models.base import check_model_interface
from shaver.models.layers import MLP, CrossNetworkMix, CrossNetworkV2, FactorizationMachine
from shaver.models.registry import MODEL_NAMES, build_model
from train_data import one_thread  # noqa: F401

FIELD_DIMS = [3, 5, 4, 2]
SMALL = {"lr": {}, "fm": {"embed_dim": 4}, "deepfm": {"embed_dim": 4, "mlp_dims": [8, 8]},
         "dcn-v2": {"embed_dim": 4, "mlp_dims": [8]},
         "dcn-mix": {"embed_dim": 4, "mlp_dims": [8], "rank": 3}}


def random_ids(batch: int, field_dims=FIELD_DIMS, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]])
    cols = [torch.randint(0, d, (batch,), generator=g) + int(o) for d, o in zip(field_dims, offsets)]
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shapes_and_gradient_flow(name):
    torch.manual_seed(0)
    model = build_model(name, FIELD_DIMS, **SMALL[name])
    check_model_interface(model)
    x = random_ids(6)
    logits = model(x)
    assert logits.shape == (6,) and logits.dtype == torch.float32
    # a non-trivial loss so zero-initialised first-order weights still get gradients
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.rand(6)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient reaches {pname}"
        assert torch.isfinite(p.grad).all()
    used = x.flatten().unique()
    emb_grad = model.embedding.weight.grad
    assert emb_grad[used].abs().sum() > 0
    unused = torch.ones(sum(FIELD_DIMS), dtype=torch.bool)
    unused[used] = False
    assert emb_grad[unused].abs().sum() == 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_head_uses_only_emb_and_x(name):
    model = build_model(name, FIELD_DIMS, **SMALL[name]).eval()
    x = random_ids(5, seed=1)
    emb = model.embedding(x).detach()
    before = model.head(emb, x)
    assert torch.equal(before, model(x))
    with torch.no_grad():
        model.embedding.weight.normal_()  # a head reading the table would change its output
    assert torch.equal(model.head(emb, x), before)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_round_trip(name):
    model = build_model(name, FIELD_DIMS, **SMALL[name]).eval()
    clone = build_model(model.config()).eval()
    assert clone.config() == model.config()
    clone.load_state_dict(model.state_dict())
    x = random_ids(7, seed=2)
    assert torch.equal(clone(x), model(x))


def test_overrides_apply_and_defaults_follow_the_paper():
    model = build_model("dcn-mix", FIELD_DIMS)
    assert model.embed_dim == 16 and model.cross_layers == 3
    assert model.num_experts == 4 and model.rank == 64
    assert model.cross.u[0].shape == (4, len(FIELD_DIMS) * 16, 64)
    deepfm = build_model("deepfm", FIELD_DIMS)
    linears = [m.out_features for m in deepfm.mlp if isinstance(m, torch.nn.Linear)]
    assert linears == [400, 400, 400, 1]
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in deepfm.mlp)
    assert deepfm.linear.weight.weight.shape == (sum(FIELD_DIMS), 1)
    small = build_model(deepfm.config(), embed_dim=8, mlp_dims=[16])
    assert small.embedding.weight.shape == (sum(FIELD_DIMS), 8)
    parallel = build_model("dcn-v2", FIELD_DIMS, structure="parallel", mlp_dims=[8])
    assert parallel.out.in_features == 8 + len(FIELD_DIMS) * 16


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 4), fields=st.integers(1, 5), dim=st.integers(1, 4),
       seed=st.integers(0, 1000))
def test_fm_equals_pairwise_sum(batch, fields, dim, seed):
    emb = torch.randn(batch, fields, dim, generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)
    brute = torch.zeros(batch, dtype=torch.float64)
    for i, j in itertools.combinations(range(fields), 2):
        brute += (emb[:, i] * emb[:, j]).sum(dim=1)
    assert torch.allclose(FactorizationMachine()(emb), brute)


def test_deepfm_is_first_order_plus_fm_plus_mlp():
    model = build_model("deepfm", FIELD_DIMS, embed_dim=3, mlp_dims=[5]).double().eval()
    with torch.no_grad():
        model.linear.weight.weight.normal_()
        model.linear.bias.fill_(0.3)
    x = random_ids(4, seed=3)
    emb = model.embedding(x)
    first = model.linear.weight.weight[x].sum(dim=(1, 2)) + 0.3
    pairwise = sum((emb[:, i] * emb[:, j]).sum(1)
                   for i, j in itertools.combinations(range(len(FIELD_DIMS)), 2))
    deep = model.mlp(emb.reshape(4, -1)).squeeze(1)
    assert torch.allclose(model(x), first + pairwise + deep)


def test_cross_v2_matches_a_loop():
    torch.manual_seed(0)
    net = CrossNetworkV2(dim=3, num_layers=2).double()
    x0 = torch.randn(4, 3, dtype=torch.float64)
    for b in range(4):
        xl = x0[b]
        for layer in net.layers:
            xl = x0[b] * (layer.weight @ xl + layer.bias) + xl
        assert torch.allclose(net(x0)[b], xl)


@pytest.mark.parametrize("gate", ["softmax", "identity"])
def test_cross_mix_matches_a_loop(gate):
    torch.manual_seed(0)
    net = CrossNetworkMix(dim=3, num_layers=2, num_experts=2, rank=2, gate=gate).double()
    x0 = torch.randn(3, 3, dtype=torch.float64)
    out = net(x0)
    for b in range(3):
        xl = x0[b]
        for i in range(2):
            weights = net.gates[i].weight @ xl
            weights = torch.softmax(weights, dim=0) if gate == "softmax" else weights
            mix = torch.zeros(3, dtype=torch.float64)
            for e in range(2):
                low = torch.tanh(net.c[i][e].T @ torch.tanh(net.v[i][e].T @ xl))
                mix += weights[e] * x0[b] * (net.u[i][e] @ low + net.bias[i])
            xl = mix + xl
        assert torch.allclose(out[b], xl)


def test_mlp_without_output_layer():
    mlp = MLP(6, [4, 3], dropout=0.5, batch_norm=False, output_layer=False)
    assert mlp(torch.randn(2, 6)).shape == (2, 3) and mlp.output_dim == 3
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in mlp)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: build_model("wide&deep", FIELD_DIMS), "known models are lr, fm, deepfm"),
        (lambda: build_model("deepfm", FIELD_DIMS, hidden=[3]), "no option 'hidden'"),
        (lambda: build_model("deepfm"), "needs field_dims"),
        (lambda: build_model({"field_dims": FIELD_DIMS}), "lacks 'name'"),
        (lambda: build_model("deepfm", FIELD_DIMS, dropout=1.0), "dropout"),
        (lambda: build_model("deepfm", FIELD_DIMS, mlp_dims=[0]), "positive"),
        (lambda: build_model("dcn-v2", FIELD_DIMS, structure="side"), "structure"),
        (lambda: build_model("dcn-v2", FIELD_DIMS, cross_layers=0), "cross layers"),
        (lambda: build_model("dcn-mix", FIELD_DIMS, rank=0), "rank"),
        (lambda: build_model("dcn-mix", FIELD_DIMS, gate="relu"), "gate"),
        (lambda: build_model("fm", [3, 0]), "field_dims"),
        (lambda: build_model("fm", [3], embed_dim=0), "embed_dim"),
        (lambda: build_model("fm", [3], embed_dim="x"), "bad options"),
    ],
)
def test_bad_options_raise_model_error(call, message):
    with pytest.raises(ModelError, match=message):
        call()


def test_check_model_interface_names_what_is_missing():
    with pytest.raises(ModelError, match="torch.nn.Module"):
        check_model_interface(object())
    with pytest.raises(ModelError, match="embedding.*head.*field_dims"):
        check_model_interface(torch.nn.Linear(2, 2))
    model = build_model("fm", FIELD_DIMS)
    model.embedding = torch.nn.Linear(3, 4, bias=False)
    model.embedding.weight = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ModelError, match="2-D tensor"):
        check_model_interface(model)
    model.embedding = torch.nn.Embedding(3, 4)
    with pytest.raises(ModelError, match="sum\\(field_dims\\) = 14"):
        check_model_interface(model)
