"""Lazy (row-sparse) Adam and the fast dropout: the same maths as their dense originals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shaver.train.loop as loop
from shaver.errors import TrainingError
from shaver.models.layers import FastDropout
from shaver.models.registry import build_model
from shaver.train.checkpoint import model_fingerprint
from shaver.train.optim import LazyAdam, coalesce_rows, make_optimizer, sparse_embeddings
from train_data import make_learnable, one_thread  # noqa: F401

CPU = torch.device("cpu")


class _Table(nn.Module):
    """An embedding table plus a dense weight: loss = sum(table(ids) * w)."""

    def __init__(self, rows: int = 10, dim: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.Embedding(rows, dim)
        self.w = nn.Parameter(torch.randn(dim))

    def loss(self, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((self.table(ids) @ self.w - target) ** 2).mean()


def _train(model: _Table, opt: torch.optim.Optimizer, batches) -> None:
    for ids, target in batches:
        opt.zero_grad(set_to_none=True)
        model.loss(ids, target).backward()
        opt.step()


def _batches(rows: int, every_row: bool, steps: int = 6):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        ids = torch.randint(0, rows // 2 if not every_row else rows, (24,), generator=g)
        if every_row:
            ids = torch.cat([ids, torch.arange(rows)])  # every row looked up, some twice
        out.append((ids, torch.randn(len(ids), generator=g)))
    return out


@pytest.mark.parametrize("fused", [None, True])
def test_lazy_adam_equals_adam_when_every_row_is_looked_up(fused):
    dense, lazy = _Table(), _Table()
    batches = _batches(10, every_row=True)
    _train(dense, torch.optim.Adam(dense.parameters(), lr=0.05, weight_decay=0.1, fused=fused),
           batches)
    with sparse_embeddings(lazy):
        _train(lazy, LazyAdam(lazy.parameters(), lr=0.05, weight_decay=0.1, fused=fused),
               batches)
    for a, b in zip(dense.parameters(), lazy.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_rows_never_looked_up_are_left_exactly_as_they_were():
    model = _Table()
    before = model.table.weight.detach().clone()
    opt = LazyAdam(model.parameters(), lr=0.05, weight_decay=0.1)
    with sparse_embeddings(model):
        _train(model, opt, _batches(10, every_row=False))  # ids < 5 only
    assert torch.equal(model.table.weight[5:], before[5:])
    assert not torch.equal(model.table.weight[:5], before[:5])
    state = opt.state[model.table.weight]
    assert state["exp_avg"][5:].abs().sum() == 0 and state["exp_avg_sq"][5:].abs().sum() == 0
    assert float(state["step"]) == 6


def test_dense_adam_decays_rows_that_lazy_adam_leaves():
    """The difference between the two optimisers, stated: dense Adam moves untouched rows."""
    model = _Table()
    before = model.table.weight.detach().clone()
    _train(model, torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=0.1),
           _batches(10, every_row=False))
    assert not torch.equal(model.table.weight[5:], before[5:])


def test_coalesce_rows_equals_torch_coalesce():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (200,), generator=g)
    values = torch.randn(200, 4, generator=g)
    grad = torch.sparse_coo_tensor(ids[None], values, (50, 4), check_invariants=True)
    rows, summed = coalesce_rows(grad)
    reference = grad.coalesce()
    assert torch.equal(rows, reference.indices()[0])
    torch.testing.assert_close(summed, reference.values())
    again_rows, again = coalesce_rows(reference)
    assert torch.equal(again_rows, rows) and torch.equal(again, reference.values())
    seen: dict = {}
    coalesce_rows(grad, seen)  # a second table over the same ids reuses the unique rows
    other = torch.sparse_coo_tensor(ids[None], 2 * values[:, :1], (50, 1), check_invariants=True)
    shared_rows, shared = coalesce_rows(other, seen)
    assert shared_rows is seen["rows"]
    torch.testing.assert_close(shared, other.coalesce().values())
    moved = torch.sparse_coo_tensor((ids.flip(0))[None], values, (50, 4), check_invariants=True)
    moved_rows, moved_sum = coalesce_rows(moved, seen)  # other ids: not reused
    torch.testing.assert_close(moved_sum, moved.coalesce().values())


def test_sparse_embeddings_switches_and_restores():
    model = build_model("deepfm", [4, 5], embed_dim=2, mlp_dims=[4])
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert len(tables) == 2  # the embedding and DeepFM's first-order weights
    with sparse_embeddings(model) as switched:
        assert switched == tables and all(t.sparse for t in tables)
    assert not any(t.sparse for t in tables)
    with sparse_embeddings(model, enabled=False) as switched:
        assert switched == [] and not any(t.sparse for t in tables)


def test_make_optimizer_kinds():
    model = _Table()
    assert type(make_optimizer(model, 1e-3, 0.0, CPU)) is torch.optim.Adam
    assert isinstance(make_optimizer(model, 1e-3, 0.0, CPU, "lazy-adam"), LazyAdam)
    with pytest.raises(TrainingError, match="unknown optimizer 'sgd'; expected one of adam"):
        make_optimizer(model, 1e-3, 0.0, CPU, "sgd")
    with pytest.raises(TrainingError, match="amsgrad"):
        LazyAdam(model.parameters(), amsgrad=True)


def test_fit_with_lazy_adam_learns_and_restores_the_model(tmp_path):
    data = make_learnable(tmp_path / "data")
    kwargs = {"epochs": 4, "lr": 1e-2, "batch_size": 256, "quiet": True, "patience": None}
    runs = {}
    for kind in ("adam", "lazy-adam"):
        model = build_model("deepfm", data.field_dims, seed=0, embed_dim=4, mlp_dims=[16, 16])
        runs[kind] = loop.fit(model, data, optimizer=kind, **kwargs)
        assert not any(m.sparse for m in model.modules() if isinstance(m, nn.Embedding))
        assert runs[kind].settings["optimizer"] == kind
    assert runs["lazy-adam"].test["auc"] > 0.8
    assert abs(runs["lazy-adam"].test["auc"] - runs["adam"].test["auc"]) < 0.02
    assert model_fingerprint(runs["lazy-adam"].model) != model_fingerprint(runs["adam"].model)


def test_fast_dropout_keeps_one_minus_p_scaled_and_backward_uses_the_same_mask():
    layer = FastDropout(0.3).train()
    x = torch.ones(400, 500, requires_grad=True)
    torch.manual_seed(0)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 200k draws: sd 0.001
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.backward(torch.full_like(y, 2.0))
    torch.testing.assert_close(x.grad, torch.where(kept, 2 / 0.7, 0.0))
    torch.manual_seed(0)
    assert torch.equal(layer(x.detach()), y.detach())  # seeded: the same mask again
    assert torch.equal(layer.eval()(x), x) and isinstance(layer, nn.Dropout)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_fast_dropout_keeps_the_dtype(dtype):
    x = torch.ones(64, 64, dtype=dtype, requires_grad=True)
    y = FastDropout(0.5).train()(x)
    assert y.dtype == dtype
    y.sum().backward()
    assert x.grad.dtype == dtype and torch.equal(x.grad != 0, y != 0)


def test_fast_dropout_falls_back_to_torch_where_it_must():
    x = torch.ones(100, 100)
    assert torch.equal(FastDropout(0.0).train()(x), x)
    assert FastDropout(1.0).train()(x).abs().sum() == 0


def test_embedding_bags_are_switched_too_except_in_max_mode():
    bag, maxed = nn.EmbeddingBag(10, 3, mode="sum"), nn.EmbeddingBag(10, 3, mode="max")
    normed = nn.Embedding(10, 3, max_norm=1.0)
    model = nn.ModuleList([bag, maxed, normed])
    with sparse_embeddings(model) as switched:
        assert switched == [bag] and bag.sparse and not maxed.sparse and not normed.sparse
        opt = LazyAdam(bag.parameters(), lr=0.1)
        before = bag.weight.detach().clone()
        bag(torch.tensor([[1, 2], [2, 3]])).sum().backward()
        assert bag.weight.grad.is_sparse
        opt.step()
    assert not bag.sparse
    changed = (bag.weight != before).any(1)
    assert changed.tolist() == [False, True, True, True] + [False] * 6


def test_lazy_adam_under_nccl_is_refused(tmp_path, monkeypatch):
    from shaver.train.distributed import DistContext

    data = make_learnable(tmp_path / "data", rows=200)
    monkeypatch.setattr(loop, "setup", lambda device: DistContext(rank=0, world=2))
    monkeypatch.setattr(loop.dist, "get_backend", lambda: "nccl")
    model = build_model("deepfm", data.field_dims, embed_dim=2, mlp_dims=[4])
    with pytest.raises(TrainingError, match="'lazy-adam' under torchrun needs the gloo backend"):
        loop.fit(model, data, optimizer="lazy-adam", quiet=True)
