"""attribute(): properties on a tiny dataset, stopping, resume, bad input, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shaver.attribution import runner
from shaver.attribution.api import attribute
from shaver.attribution.codebook import field_codebook
from shaver.attribution.estimator.common import bce
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.result import Attribution
from shaver.attribution.sampling import SampleSource, parse_data
from shaver.data.store import write_prepared
from shaver.errors import AttributionError, FingerprintMismatch, ModelError
from test_attribution_helpers import DEVICES, UNUSED_LOCAL, any_model, tiny_dataset
from test_attribution_helpers import quiet_attribute as _run

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("attr") / "ds")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["deepfm", "dcn-mix", "tanh-net"])
def test_null_players_and_efficiency_over_the_data(ds, name, device):
    model = any_model(name)
    size = ds.num_rows("train+val")
    res = _run(model, ds, max_samples=2 * size, device=device)
    assert res.count == 2 * size and res.settings["passes"] == 2
    for off, unused in zip(ds.offsets, UNUSED_LOCAL):
        assert torch.all(res.phi[off + unused] == 0) and torch.all(res.stderr[off + unused] == 0)
    # efficiency: sum(phi) = mean over D of loss(all replaced) - loss(full) (2 full passes)
    x, y = (torch.from_numpy(a) for a in ds.arrays("train+val"))
    imputer = PlaceholderImputer(model.cpu(), res.codebook)
    keep = torch.ones(len(x), imputer.num_players, dtype=torch.bool)
    gap = (bce(imputer(x, ~keep), y) - bce(imputer(x, keep), y)).mean()
    assert float(res.phi.double().sum()) == pytest.approx(float(gap), abs=1e-5)
    assert res.model_fingerprint and res.dataset_fingerprint == ds.fingerprint


def test_engines_and_batch_sizes_agree(ds):
    model = any_model("deepfm")
    a = _run(model, ds, max_samples=50, engine="reference", batch_size=50)
    b = _run(model, ds, max_samples=50, engine="fast", batch_size=7)
    assert torch.allclose(a.phi, b.phi, atol=1e-6) and torch.allclose(a.stderr, b.stderr, atol=1e-6)
    assert b.settings["path"] == "fm-mlp" and a.settings["path"] == "reference"


def test_codebook_from_the_attribution_data_and_zero_variant(ds):
    model = any_model("fm")
    res = _run(model, ds, data="train:20", max_samples=5)
    source = SampleSource(ds, "train:20", seed=3)
    assert source.size == 20
    want = field_codebook(model.embedding.weight, ds.field_dims, source.frequencies())
    assert torch.allclose(res.codebook, want)
    zero = _run(model, ds, placeholder="zero", max_samples=5)
    assert torch.equal(zero.codebook, torch.zeros_like(zero.codebook))
    assert not torch.allclose(zero.phi, res.phi)
    full = SampleSource(ds, "train")
    assert np.array_equal(full.frequencies(), ds.frequencies)
    both = SampleSource(ds, "train+val")
    x, _ = ds.arrays("train+val")
    assert np.array_equal(both.frequencies(), np.bincount(x.ravel(), minlength=ds.num_features))


def test_data_choice_parsing_and_stream(ds):
    assert parse_data("train+val:0.5") == (("train", "val"), 0.5)
    assert parse_data("val:3") == (("val",), 3)
    assert SampleSource(ds, "train+val:0.5").size == round(0.5 * ds.num_rows("train+val"))
    for bad, msg in [("tran", "unknown split"), ("train:abc", "FRACTION"),
                     ("train:1.5", "fraction"), ("train:0", "row count")]:
        with pytest.raises(AttributionError, match=msg):
            parse_data(bad)
    x_all, y_all = ds.arrays("train")
    empty_val = write_prepared(ds.path.parent / "noval", field_names=ds.field_names,
                               vocabularies=ds.vocabularies, frequencies=ds.frequencies,
                               splits={"train": (x_all, y_all, np.arange(len(y_all)))})
    with pytest.raises(AttributionError, match="empty"):
        SampleSource(empty_val, "val")
    src = SampleSource(ds, "train+val", seed=1)
    first, second = src.rows_of(0, src.size), src.rows_of(src.size, 2 * src.size)
    assert sorted(first) == list(range(src.size)) == sorted(second)
    assert not np.array_equal(first, second)  # each pass its own order
    x, y, w = src.batch(5, 17)
    assert w is None  # no weighted bag
    xa, ya = ds.arrays("train+val")
    assert np.array_equal(x, xa[first[5:17]]) and np.array_equal(y, ya[first[5:17]])


def test_stopping_rule(ds):
    model = any_model("lr")
    size = ds.num_rows("train+val")
    res = _run(model, ds, tolerance=1e6, batch_size=8)
    assert res.settings["stop_reason"] == "converged"
    assert size <= res.count < size + 8  # at least one full pass, then the first check
    res = _run(model, ds, tolerance=1e-9, max_seconds=0.0)
    assert res.settings["stop_reason"] == "max_seconds" and res.count == 8
    res = _run(model, ds, tolerance=1e-9, max_samples=13)
    assert res.settings["stop_reason"] == "max_samples" and res.count == 13


def test_resume_equals_uninterrupted_and_save_round_trip(ds, tmp_path):
    model = any_model("deepfm")
    whole = _run(model, ds, max_samples=90, antithetic=True)
    state = tmp_path / "state.safetensors"
    _run(model, ds, max_samples=36, antithetic=True, checkpoint_path=state)
    resumed = _run(model, ds, max_samples=90, antithetic=True, checkpoint_path=state,
                   resume=True)
    assert resumed.count == 90
    assert torch.allclose(resumed.phi, whole.phi, atol=1e-7)
    assert torch.allclose(resumed.stderr, whole.stderr, atol=1e-7)
    back = Attribution.load(resumed.save(tmp_path / "a.safetensors"))
    assert torch.equal(back.phi, resumed.phi) and back.settings["antithetic"] is True


def test_killed_run_resumes_without_losing_or_double_counting(ds, tmp_path, monkeypatch):
    model = any_model("tanh-net")
    whole = _run(model, ds, max_samples=60)
    state = tmp_path / "state.safetensors"
    real, calls = runner.batch_credits, {"n": 0}

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)

    monkeypatch.setattr(runner, "batch_credits", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(model, ds, max_samples=60, checkpoint_path=state, checkpoint_every_s=0)
    monkeypatch.setattr(runner, "batch_credits", real)
    resumed = _run(model, ds, max_samples=60, checkpoint_path=state, resume=True)
    assert resumed.count == 60
    assert torch.allclose(resumed.phi, whole.phi, atol=1e-7)


def test_resume_refuses_other_settings_and_bad_files(ds, tmp_path):
    model = any_model("fm")
    state = tmp_path / "state.safetensors"
    _run(model, ds, max_samples=16, checkpoint_path=state)
    with pytest.raises(AttributionError, match="other settings.*seed"):
        _run(model, ds, max_samples=32, checkpoint_path=state, resume=True, seed=4)
    with pytest.raises(AttributionError, match="other settings.*placeholder"):
        _run(model, ds, max_samples=32, checkpoint_path=state, resume=True, placeholder="zero")
    with pytest.raises(AttributionError, match="checkpoint_path"):
        _run(model, ds, resume=True)
    done = _run(model, ds, max_samples=16, checkpoint_path=state, resume=True)
    assert done.count == 16 and done.settings["stop_reason"] == "max_samples"  # nothing added
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a state")
    with pytest.raises(AttributionError, match="cannot read"):
        _run(model, ds, checkpoint_path=bad, resume=True)
    fresh = _run(model, ds, max_samples=8, checkpoint_path=tmp_path / "none.st", resume=True)
    assert fresh.count == 8


def test_bad_models_and_data(ds, tmp_path):
    with pytest.raises(ModelError, match="head"):
        attribute(nn.Linear(3, 1), ds)
    other = any_model("fm", field_dims=[3, 4, 3])
    with pytest.raises(FingerprintMismatch, match="field_dims"):
        _run(other, ds)
    model = any_model("fm")
    model.dataset_fingerprint = "0" * 16
    with pytest.raises(FingerprintMismatch, match="fingerprint"):
        _run(model, ds)
    del model.dataset_fingerprint
    for kw, msg in [({"placeholder": "mean"}, "placeholder"), ({"dtype": "fp16"}, "dtype"),
                    ({"engine": "x"}, "engine"), ({"tolerance": 0}, "tolerance"),
                    ({"max_samples": 0}, "max_samples"), ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(AttributionError, match=msg):
            _run(model, ds, **kw)


def test_nan_losses_are_reported(ds):
    model = any_model("deepfm")
    with torch.no_grad():
        model.mlp[0].weight[0, 0] = float("nan")
    with pytest.raises(AttributionError, match="NaN"):
        _run(model, ds, max_samples=16)


def test_model_mode_is_restored(ds):
    model = any_model("deepfm").train()
    _run(model, ds, max_samples=4)
    assert model.training


def test_cli_writes_the_attribution_and_resumes(ds, tmp_path, capsys, monkeypatch):
    from shaver.cli import main
    from shaver.train.checkpoint import save_run

    run = save_run(tmp_path / "run", any_model("deepfm"), dataset=ds, metrics={}, seed=0,
                   train_config={})
    args = ["attribute", "--run", str(run), "--max-samples", "24", "--batch-size", "8",
            "--device", "cpu", "--quiet", "--stop", "sage", "--tolerance", "1e-9"]
    assert main(args) == 0
    res = Attribution.load(run / "attribution-codebook.safetensors")
    assert res.count == 24 and "wrote" in capsys.readouterr().out
    assert (run / "attribution-codebook.state.safetensors").is_file()
    real, walked = runner.batch_credits, []

    def counted(engine, x, *rest):
        walked.append(x.shape[0])
        return real(engine, x, *rest)

    monkeypatch.setattr(runner, "batch_credits", counted)
    assert main([*args[:4], "48", *args[5:], "--resume"]) == 0
    assert sum(walked) == 24  # the resumed run walked samples 24..47 only
    resumed = Attribution.load(run / "attribution-codebook.safetensors")
    whole = tmp_path / "whole.safetensors"
    assert main([*args[:4], "48", *args[5:], "--out", str(whole)]) == 0
    assert sum(walked) == 24 + 48
    whole = Attribution.load(whole)
    assert resumed.count == whole.count == 48
    assert torch.allclose(resumed.phi, whole.phi, atol=1e-7)
    assert torch.allclose(resumed.stderr, whole.stderr, atol=1e-7)
    out = tmp_path / "z.safetensors"
    assert main([*args, "--resume", "--placeholder", "zero", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'z.state.safetensors'}: no running state to resume (--resume "
        "continues an interrupted attribution with the same --out); drop --resume to start "
        "afresh\n")
    assert not out.exists()
    assert main([*args, "--resume", "--seed", "9"]) == 2
    assert "other settings" in capsys.readouterr().err
