"""Accumulator: statistics against numpy, merge = sum of states, state files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from shaver.attribution.accumulator import Accumulator, settings_hash
from shaver.attribution.api import attribute
from shaver.errors import AttributionError
from test_attribution_helpers import any_model, tiny_dataset


def _credits(seed, samples=6, entries=10, players=3):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(entries, generator=gen)[:players] for _ in range(samples)])
    return idx, torch.randn(samples, players, generator=gen)


def test_statistics_match_a_dense_numpy_computation():
    idx, credits = _credits(0)
    acc = Accumulator(10)
    acc.add(idx, credits)
    dense = np.zeros((6, 10))
    for s in range(6):
        dense[s, idx[s].numpy()] = credits[s].numpy()
    assert acc.count == 6
    assert np.allclose(acc.phi().numpy(), dense.mean(0))
    assert np.allclose(acc.stderr().numpy(), dense.std(0) / np.sqrt(6))
    phi = dense.mean(0)
    ratio = (dense.std(0) / np.sqrt(6)).max() / (phi.max() - phi.min())
    assert acc.convergence_ratio() == pytest.approx(ratio)
    assert Accumulator(3).convergence_ratio() == float("inf")


def test_merge_is_the_sum_of_states():
    whole, a, b = Accumulator(10), Accumulator(10), Accumulator(10)
    for seed, part in ((1, a), (2, b)):
        idx, credits = _credits(seed)
        part.add(idx, credits)
        whole.add(idx, credits)
    a.merge(b)
    assert a.count == whole.count == 12
    assert torch.allclose(a.sum, whole.sum) and torch.allclose(a.sumsq, whole.sumsq)
    with pytest.raises(AttributionError, match="cannot merge"):
        a.merge(Accumulator(11))


def test_state_file_round_trip_and_refusals(tmp_path):
    idx, credits = _credits(3)
    acc = Accumulator(10)
    acc.add(idx, credits)
    settings = {"seed": 1, "placeholder": "codebook"}
    acc.save(tmp_path / "s.st", cursor=6, settings=settings)
    back, cursor = Accumulator.load(tmp_path / "s.st", settings=settings)
    assert cursor == 6 and back.count == 6 and torch.equal(back.sum, acc.sum)
    with pytest.raises(AttributionError, match="differs in: seed"):
        Accumulator.load(tmp_path / "s.st", settings={**settings, "seed": 2})
    save_file({"sum": torch.zeros(2)}, str(tmp_path / "x.st"), metadata={"format": "other"})
    with pytest.raises(AttributionError, match="not a shaver attribution state"):
        Accumulator.load(tmp_path / "x.st", settings=settings)
    assert settings_hash(settings) == settings_hash(dict(reversed(settings.items())))


def test_resume_state_of_another_size_is_refused(tmp_path):
    ds = tiny_dataset(tmp_path / "ds")
    model = any_model("fm")
    state = tmp_path / "state.st"
    attribute(model, ds, tolerance=None, max_samples=8, batch_size=8, quiet=True,
              device="cpu", checkpoint_path=state)
    # same settings (metadata kept), sums of another size
    from safetensors import safe_open

    with safe_open(str(state), framework="pt") as f:
        meta = f.metadata()
    save_file({"sum": torch.zeros(5, dtype=torch.float64),
               "sumsq": torch.zeros(5, dtype=torch.float64)}, str(state), metadata=meta)
    with pytest.raises(AttributionError, match="5 entries"):
        attribute(model, ds, tolerance=None, max_samples=16, batch_size=8, quiet=True,
                  device="cpu", checkpoint_path=state, resume=True)
