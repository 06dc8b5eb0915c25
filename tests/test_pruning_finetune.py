"""Fine-tuning any plan, quantisation-aware: what is trained is what is stored (exactly),
the straight-through gradient, tier map / mask / bytes fixed, the runtime equals the
fine-tuned model, the plan kept when no epoch beats it, refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from shaver.data.store import write_prepared
from shaver.deploy.artifact import export_artifact, load_artifact
from shaver.errors import TrainingError
from shaver.models.registry import build_model
from shaver.pruning import api as api_module
from shaver.pruning.api import cut, finetune_cut, open_chooser, prune
from shaver.pruning.finetune import FinetuneConfig, finetune
from shaver.table.budget import Budget
from shaver.table.families import parse_tiers
from shaver.table.order import ScoreError
from shaver.table.qat import on_stored_grid
from shaver.table.tiers import plan_copy
from shaver.train.loop import fit
from test_pruning_api import N, make_attribution
from test_pruning_util import DIM, FIELD_DIMS, TinyModel, random_ids, tiny_dataset

CONFIG = FinetuneConfig(epochs=2, lr=0.05, batch_size=32, patience=None)
#: (restriction, plan, head): fp32, fp16, int4 and mixed tiers, each head precision.
PLANS = [({"families": [parse_tiers("int4")], "heads": ["int8"]}, "int4/field/entry", "int8"),
         ({"families": [parse_tiers("int8:0.5,int2/row:0.5", "row")], "heads": ["fp16"]},
          "int8/field:0.5+int2/row:0.5/row", "fp16"),
         ({"families": [parse_tiers("fp16")], "heads": ["fp32"]}, "fp16/entry", "fp32"),
         ({"families": [parse_tiers("fp32")], "heads": ["fp32"]}, "fp32/entry", "fp32")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data") / "ds", rows=600)


@pytest.fixture(scope="module", params=["deepfm", "dcn-mix"])
def model(request, dataset):
    """A DeepFM (first-order tables) or DCN-Mix (3-d expert matrices), trained a little."""
    sizes = {"deepfm": {"mlp_dims": [8]}, "dcn-mix": {"mlp_dims": [8], "cross_layers": 1,
                                                        "num_experts": 2, "rank": 2}}
    model = build_model(request.param, FIELD_DIMS, embed_dim=DIM, seed=0,
                        **sizes[request.param])
    fit(model, dataset, epochs=2, lr=0.03, batch_size=32, patience=None, quiet=True,
        device="cpu")
    return model.eval()


@pytest.fixture(scope="module")
def attr(model, dataset):
    return make_attribution(model, dataset)


def plan_of(model, attr, dataset, restriction, budget="table_bytes=1/2"):
    (plain,) = prune(model, attr, [budget], dataset=dataset, evaluate=False, **restriction)
    return plain


@pytest.mark.parametrize("restriction, plan, head", PLANS)
def test_the_trained_forward_is_the_stored_plan_to_the_bit(model, attr, dataset, restriction,
                                                            plan, head):
    plain = plan_of(model, attr, dataset, restriction)
    assert (plain.info["plan"], plain.info["head_dtype"]) == (plan, head) and plain.kept > 0
    emb = plain.model.embedding
    latent = copy.deepcopy(plain.model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # latent values off the grid
        for p in latent.parameters():
            p.add_(0.03 * torch.randn(p.shape, generator=gen))
    x = random_ids(64)
    with on_stored_grid(latent, head):
        trained = latent(x)
        trained.sum().backward()
    stored = plan_copy(latent, emb.tier_map.numpy(), emb.tiers, emb.codebook, head)
    assert torch.equal(trained.detach(), stored(x))
    # straight through: the stored value's gradient reaches the latent value, pruned get none
    grad = latent.embedding.weight.grad
    assert torch.all(grad[~emb.mask] == 0) and torch.any(grad[emb.mask] != 0)
    assert "parametrizations" not in dict(latent.named_modules())  # removed on leaving


@pytest.mark.parametrize("restriction, plan, head", PLANS)
def test_finetuned_plan_is_what_the_artifact_computes_within_its_bytes(
        model, attr, dataset, tmp_path, restriction, plan, head, monkeypatch):
    monkeypatch.setattr(api_module.Chooser, "validate",  # every epoch "beats" the plan
                        lambda self, m: (1.0, 0.0) if m.embedding.weight.grad is None
                        and getattr(m, "_tuned", False) else (0.0, 1.0))
    real = api_module.finetune

    def marked(*args, **kw):
        tuned, record = real(*args, **kw)
        tuned._tuned = True
        return tuned, record

    monkeypatch.setattr(api_module, "finetune", marked)
    budget = Budget("bytes", plan_of(model, attr, dataset, restriction).artifact_bytes)
    plain = plan_of(model, attr, dataset, restriction, budget)
    (tuned,) = prune(model, attr, [budget], dataset=dataset, finetune_config=CONFIG,
                     **restriction)
    assert tuned.info["plan"] == plan and tuned.info["head_dtype"] == head
    assert tuned.info["finetuned"] and tuned.info["finetune_best_epoch"] >= 1
    assert tuned.row()["finetune_epochs"] == 2 and tuned.row()["finetuned"] is True
    before, after = plain.model.embedding, tuned.model.embedding
    assert torch.equal(before.tier_map, after.tier_map)  # tier map and mask fixed
    assert torch.equal(before.codebook, after.codebook)
    assert not torch.equal(before.weight, after.weight)  # the kept values trained
    assert (tuned.kept, tuned.artifact_bytes) == (plain.kept, plain.artifact_bytes)
    out = export_artifact(tuned, tmp_path / "a.shaver")
    assert out.bytes == out.path.stat().st_size == tuned.artifact_bytes <= budget.value
    art = load_artifact(out.path)
    x = random_ids(200, seed=3)
    with torch.no_grad():
        want = torch.sigmoid(tuned.model(x)).numpy()
    np.testing.assert_allclose(art.predict(x.numpy()), want, atol=1e-5, rtol=0)
    if "calibration" in tuned.info:  # refitted after fine-tuning
        assert tuned.info["calibration"] != plain.info["calibration"]


def test_the_plan_is_kept_when_no_epoch_beats_it(model, attr, dataset, monkeypatch):
    restriction = PLANS[0][0]
    plain = plan_of(model, attr, dataset, restriction)
    monkeypatch.setattr(api_module.Chooser, "validate",  # the plan as chosen always wins
                        lambda self, m: (1.0, 0.0) if getattr(m, "_chosen", True) else (0.5, 1.0))
    real = api_module.finetune

    def marked(*args, **kw):
        tuned, record = real(*args, **kw)
        tuned._chosen = False
        return tuned, record

    monkeypatch.setattr(api_module, "finetune", marked)
    (kept,) = prune(model, attr, ["table_bytes=1/2"], dataset=dataset, finetune_config=CONFIG,
                    **restriction)
    assert kept.info["finetuned"] and kept.info["finetune_best_epoch"] == 0
    assert kept.info["finetune_epochs"] == 2
    assert kept.info["calibration"] == plain.info["calibration"]
    state = plain.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in kept.model.state_dict().items())


def test_a_real_finetune_of_an_int4_plan_improves_validation(model, attr, dataset):
    plain = plan_of(model, attr, dataset, PLANS[0][0])
    tuned, record = finetune(plain.model, dataset, FinetuneConfig(epochs=3, lr=0.05,
                                                                  batch_size=32),
                             head_dtype="int8", device="cpu")
    assert record["epochs_run"] >= 1 and 1 <= record["best_epoch"] <= record["epochs_run"]
    assert record["seconds"] == sum(h["seconds"] for h in record["history"]) > 0
    assert tuned.calibration is None and not tuned.training
    # the stored grid: int4 values take at most 16 levels per field
    w, tmap = tuned.embedding.weight.detach(), tuned.embedding.tier_map
    start = 0
    for dim in FIELD_DIMS:
        values = w[start:start + dim][tmap[start:start + dim] > 0]
        assert len(torch.unique(values)) <= 16
        start += dim
    assert plain.model.embedding.weight.grad is None  # the chosen plan is left as it was


def test_finetune_refusals(model, attr, dataset, tmp_path):
    with pytest.raises(TrainingError, match="^fine-tuning epochs: "):
        FinetuneConfig(epochs=0)
    with pytest.raises(TrainingError, match="^fine-tuning lr: "):
        FinetuneConfig(lr=-1.0)
    with pytest.raises(TrainingError, match="expects a plan"):
        finetune(TinyModel(), dataset, CONFIG)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, N, (40, len(FIELD_DIMS))).astype(np.int32)
    ids = (ids % np.array(FIELD_DIMS)) + np.concatenate([[0], np.cumsum(FIELD_DIMS)[:-1]])
    labels = (rng.random(40) < 0.5).astype(np.float32)
    names = [f"f{i}" for i in range(len(FIELD_DIMS))]
    no_val = write_prepared(tmp_path / "noval", field_names=names,
                            vocabularies={n: [str(j) for j in range(d)]
                                          for n, d in zip(names, FIELD_DIMS)},
                            splits={"train": (ids, labels, np.arange(40))},
                            frequencies=np.bincount(ids.reshape(-1), minlength=N))
    plain = plan_of(model, attr, dataset, PLANS[0][0])
    with pytest.raises(TrainingError, match="stops early on the validation split, and there "
                                            "is none"):
        finetune(plain.model, no_val, CONFIG)
    assert DIM == plain.model.embedding.embedding_dim


def test_finetune_cut_needs_the_choosers_dataset(model):
    chooser, names = open_chooser(model, np.ones((N, DIM)), "scores", dataset=None)
    single = cut(chooser, names, Budget.parse("0.5"), "scores", evaluate=False)
    with pytest.raises(ScoreError, match="fine-tuning needs a dataset"):
        finetune_cut(chooser, single, CONFIG)
