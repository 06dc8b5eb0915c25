"""Pruning a model with bags: the scorers read slot embeddings and the bags' weights; prune()
(the chooser, "auto") and the paper's fixed cut run end to end at sparsity and byte budgets,
and a pruned model pools its bags with the pruned table (placeholders inside the bag)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attribution_bag_data import bag_model, write_bag_dataset
from shaver.attribution.api import attribute
from shaver.pruning.api import prune
from shaver.pruning.scorers import compute_scores, data_frequencies

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def bag_ds(tmp_path_factory):
    return write_bag_dataset(tmp_path_factory.mktemp("bags") / "ds", rows=400)


@pytest.fixture(scope="module")
def model(bag_ds):
    return bag_model("deepfm", embed_dim=4, dims=bag_ds.field_dims, layout=bag_ds.layout)


def test_frequencies_count_every_bag_value_and_no_pad(bag_ds):
    counts = data_frequencies(bag_ds, "train")
    x, _ = bag_ds.arrays("train")
    assert counts.sum() == int((x >= 0).sum())
    assert np.array_equal(counts, np.asarray(bag_ds.frequencies))


@pytest.mark.parametrize("scorer", ["magnitude", "taylor"])
def test_scorers_run_on_bags(bag_ds, model, scorer):
    scores = compute_scores(scorer, model, dataset=bag_ds, data="train", placeholder="codebook")
    assert scores.values.shape == tuple(model.embedding.weight.shape)
    assert np.isfinite(scores.values).all()
    if scorer == "taylor":  # rows no sample holds get no gradient
        unseen = np.asarray(bag_ds.frequencies) + data_frequencies(bag_ds, "val") == 0
        assert (scores.values[unseen] == 0).all()


@pytest.fixture(scope="module")
def attribution(bag_ds, model):
    return attribute(model, bag_ds, quiet=True, max_samples=300, batch_size=64)


def test_prune_fixed_cut_on_bags_keeps_the_placeholder_inside_the_bag(bag_ds, model,
                                                                      attribution):
    (result,) = prune(model, attribution, [0.9], method="shaver", dataset=bag_ds,
                      evaluate=False)
    assert 0 < result.kept < result.total
    x, _ = bag_ds.arrays("val")
    w = bag_ds.weights("val")
    xt, wt = torch.from_numpy(x[:50]), torch.from_numpy(w[:50])
    # the pruned model == the base model's head over the pruned table: a pruned entry holds
    # its field's codebook value and keeps its coefficient in the bag
    n = model.embedding.weight.shape[0]
    with torch.no_grad():
        table = result.model.embedding(torch.arange(n)[None])[0]
        row_field = torch.repeat_interleave(torch.arange(len(bag_ds.field_dims)),
                                            torch.tensor(bag_ds.field_dims))
        pruned = table != model.embedding.weight
        assert bool(pruned.any())
        assert torch.equal(table[pruned], attribution.codebook[row_field].expand_as(table)[pruned])
        emb = torch.nn.functional.embedding(xt.clamp_min(0), table) * (xt >= 0)[..., None]
        assert torch.allclose(result.model(xt, wt), model.head(emb, xt, wt), atol=1e-5)


@pytest.mark.parametrize("budgets", [[0.5, 0.95], ["12KiB"]])
def test_prune_auto_runs_on_bags(bag_ds, model, attribution, budgets):
    results = prune(model, attribution, budgets, dataset=bag_ds, quiet=True)
    assert len(results) == len(budgets)
    x, _ = bag_ds.arrays("test")
    w = bag_ds.weights("test")
    for result in results:
        with torch.no_grad():
            out = result.model(torch.from_numpy(x[:64]), torch.from_numpy(w[:64]))
        assert torch.isfinite(out).all()
        assert result.info["method"] == "auto"
