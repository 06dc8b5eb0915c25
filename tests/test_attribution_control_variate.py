"""The control variate (path-gradient surrogate): unbiased, less variance, survives resume."""

from __future__ import annotations

import pytest
import torch

from shaver.attribution.estimator.common import bce
from shaver.attribution.exact import exact_sample_shapley, exact_shapley
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.surrogate import path_credits
from test_attribution_helpers import UNUSED_LOCAL, any_model, tiny_dataset
from test_attribution_helpers import quiet_attribute as _run

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("cv") / "ds")


def _imputer_and_data(name, ds):
    model = any_model(name).eval()
    book = torch.randn(ds.num_fields, 2, generator=torch.Generator().manual_seed(4))
    x, y = (torch.from_numpy(a) for a in ds.arrays("train+val"))
    return PlaceholderImputer(model, book), x, y


@pytest.mark.parametrize("name", ["deepfm", "dcn-mix", "tanh-net"])
def test_path_credits_follow_the_exact_shapley_values(ds, name):
    imputer, x, y = _imputer_and_data(name, ds)
    x, y = x[:6], y[:6]
    credits = path_credits(imputer, x, y, points=64)
    keep = torch.ones(len(x), imputer.num_players, dtype=torch.bool)
    gap = bce(imputer(x, ~keep), y) - bce(imputer(x, keep), y)
    assert torch.allclose(credits.sum(1), gap.double(), rtol=1e-2, atol=2e-3)  # path integral
    # same entry order and sign as the Shapley values (an approximation of them: strong
    # interactions of these tiny random models keep it from being exact)
    exact = exact_sample_shapley(imputer, x, y).double()
    assert torch.corrcoef(torch.stack([credits.flatten(), exact.flatten()]))[0, 1] > 0.6


@pytest.mark.parametrize("name", ["deepfm", "tanh-net"])
def test_unbiased_null_players_and_efficiency(ds, name):
    model = any_model(name)
    size = ds.num_rows("train+val")
    res = _run(model, ds, max_samples=40 * size, batch_size=64, control_variate=True)
    assert res.settings["control_variate"].startswith("path-gradient")
    for off, unused in zip(ds.offsets, UNUSED_LOCAL):
        assert torch.all(res.phi[off + unused] == 0)
    x, y = (torch.from_numpy(a) for a in ds.arrays("train+val"))
    imputer = PlaceholderImputer(model.cpu(), res.codebook)
    keep = torch.ones(len(x), imputer.num_players, dtype=torch.bool)
    gap = (bce(imputer(x, ~keep), y) - bce(imputer(x, keep), y)).mean()
    assert float(res.phi.double().sum()) == pytest.approx(float(gap), abs=1e-5)
    exact = exact_shapley(imputer, x, y, ds.num_features).double().reshape(-1)
    z = (res.phi.double().reshape(-1) - exact).abs() / (res.stderr.double().reshape(-1) + 1e-12)
    assert float(z.max()) < 4.5, z.max()


def test_less_variance_than_the_plain_estimator(ds):
    model = any_model("deepfm")
    size = ds.num_rows("train+val")
    plain = _run(model, ds, max_samples=4 * size)
    cv = _run(model, ds, max_samples=4 * size, control_variate=True)
    assert float(cv.stderr.max()) < 0.7 * float(plain.stderr.max())
    assert cv.settings["convergence_ratio"] < plain.settings["convergence_ratio"]


def test_resume_keeps_the_surrogate_mean(ds, tmp_path, monkeypatch):
    from shaver.attribution import api

    model = any_model("deepfm")
    whole = _run(model, ds, max_samples=90, control_variate=True, antithetic=True)
    state = tmp_path / "state.safetensors"
    _run(model, ds, max_samples=36, control_variate=True, antithetic=True, checkpoint_path=state)
    monkeypatch.setattr(api, "surrogate_mean", lambda *a, **k: pytest.fail("recomputed"))
    resumed = _run(model, ds, max_samples=90, control_variate=True, antithetic=True,
                   checkpoint_path=state, resume=True)
    assert resumed.count == 90
    assert torch.allclose(resumed.phi, whole.phi, atol=1e-7)
    assert torch.allclose(resumed.stderr, whole.stderr, atol=1e-7)
    with pytest.raises(Exception, match="control_variate"):
        _run(model, ds, max_samples=90, checkpoint_path=state, resume=True)


def test_cli_options_reach_the_result(ds, tmp_path):
    from shaver.attribution.result import Attribution
    from shaver.cli import main
    from shaver.train.checkpoint import save_run

    run = save_run(tmp_path / "run", any_model("deepfm"), dataset=ds, metrics={}, seed=0,
                   train_config={})
    out = tmp_path / "a.safetensors"
    assert main(["attribute", "--run", str(run), "--max-samples", "24", "--batch-size", "8",
                 "--device", "cpu", "--quiet", "--control-variate", "--antithetic",
                 "--dtype", "int8", "--out", str(out)]) == 0
    settings = Attribution.load(out).settings
    assert settings["control_variate"].startswith("path-gradient") and settings["antithetic"]
    agreed = settings["int8_agreement"] >= 0.9  # int8 ran only where it agreed with fp32
    assert settings["dtype"] == "int8" and settings["dtype_used"] == ("int8" if agreed else "fp32")


# -- the sampled control variate: the surrogate's mean from a sample S that grows with W ----
def test_sampled_mean_is_unbiased_and_its_errors_are_calibrated(ds):
    """Walks on a quarter of D, the surrogate's mean on half of D (surrogate_rows 2): the
    mean over 24 seeds equals the exact Shapley values over ALL of D, and each run's
    standard errors (walks + the sample of the surrogate) cover its own error."""
    model = any_model("deepfm")
    size = ds.num_rows("train+val")
    runs = [_run(model, ds, max_samples=size // 4, seed=s, control_variate="sampled",
                 surrogate_rows=2) for s in range(24)]
    assert {r.settings["surrogate_rows_seen"] for r in runs} == {2 * (size // 4)}
    phis = torch.stack([r.phi.double().reshape(-1) for r in runs])
    errs = torch.stack([r.stderr.double().reshape(-1) for r in runs])
    x, y = (torch.from_numpy(a) for a in ds.arrays("train+val"))
    imputer = PlaceholderImputer(model.cpu(), runs[0].codebook)
    exact = exact_shapley(imputer, x, y, ds.num_features).double().reshape(-1)
    mean, se = phis.mean(0), phis.std(0) / len(runs) ** 0.5
    assert float(((mean - exact).abs() / (se + 1e-12)).max()) < 4.5
    touched = errs > 0
    z = (phis - exact)[touched] / errs[touched]
    assert 0.5 < float(z.pow(2).mean()) < 2.0  # calibrated on the whole (within a factor 2)


def test_sampled_mean_over_all_of_d_is_the_exact_control_variate(ds):
    """Once S covers D its mean is exact and adds no error: same phi and errors as "exact"."""
    model = any_model("deepfm")
    size = ds.num_rows("train+val")
    exact = _run(model, ds, max_samples=size // 2, control_variate="exact")
    sampled = _run(model, ds, max_samples=size // 2, control_variate="sampled",
                   surrogate_rows=2.5)
    assert sampled.settings["surrogate_rows_seen"] == size
    assert sampled.settings["control_variate"].endswith("-sampled-2.5")
    assert torch.allclose(sampled.phi, exact.phi, atol=1e-7)
    assert torch.allclose(sampled.stderr, exact.stderr, atol=1e-7)
    partial = _run(model, ds, max_samples=size // 2, control_variate="sampled",
                   surrogate_rows=1)
    walks_only = (exact.stderr > 0)
    assert bool((partial.stderr[walks_only] >= exact.stderr[walks_only] - 1e-7).all())


def test_sampled_resume_continues_the_sample(ds, tmp_path):
    model = any_model("deepfm")
    opts = dict(control_variate="sampled", surrogate_rows=3)
    whole = _run(model, ds, max_samples=40, **opts)
    state = tmp_path / "state.safetensors"
    _run(model, ds, max_samples=16, checkpoint_path=state, **opts)
    resumed = _run(model, ds, max_samples=40, checkpoint_path=state, resume=True, **opts)
    assert resumed.settings["surrogate_rows_seen"] == whole.settings["surrogate_rows_seen"]
    assert torch.allclose(resumed.phi, whole.phi, atol=1e-7)
    assert torch.allclose(resumed.stderr, whole.stderr, atol=1e-7)
    with pytest.raises(Exception, match="control_variate"):
        _run(model, ds, max_samples=40, checkpoint_path=state, resume=True,
             control_variate="sampled", surrogate_rows=4)


@pytest.mark.parametrize("kw, message", [
    (dict(control_variate="maybe"), "control_variate must be one of off, exact, sampled"),
    (dict(control_variate="sampled", surrogate_rows=0.5), "surrogate_rows must be >= 1"),
])
def test_bad_control_variate_options(ds, kw, message):
    with pytest.raises(Exception, match=message):
        _run(any_model("deepfm"), ds, max_samples=8, **kw)


def test_cli_sampled_control_variate(ds, tmp_path):
    from shaver.attribution.result import Attribution
    from shaver.cli import main
    from shaver.train.checkpoint import save_run

    run = save_run(tmp_path / "run", any_model("deepfm"), dataset=ds, metrics={}, seed=0,
                   train_config={})
    out = tmp_path / "a.safetensors"
    assert main(["attribute", "--run-dir", str(run), "--max-samples", "16", "--batch-size",
                 "8", "--device", "cpu", "--quiet", "--control-variate", "sampled",
                 "--surrogate-rows", "2", "--out", str(out)]) == 0
    settings = Attribution.load(out).settings
    assert settings["control_variate"].endswith("-sampled-2")
    assert settings["surrogate_rows_seen"] == 32
    assert main(["attribute", "--run-dir", str(run), "--max-samples", "8", "--quiet",
                 "--control-variate", "sampled", "--surrogate-rows", "0.5",
                 "--out", str(out)]) == 2


def test_compute_epochs_caps_by_the_runs_own_epoch_time(ds, tmp_path, capsys):
    from shaver.attribution.result import Attribution
    from shaver.cli import main
    from shaver.train.checkpoint import save_run

    history = {"history": [{"epoch": 1, "seconds": 2.0}, {"epoch": 2, "seconds": 4.0}]}
    run = save_run(tmp_path / "run", any_model("deepfm"), dataset=ds, metrics=history, seed=0,
                   train_config={})
    out = tmp_path / "a.safetensors"
    args = ["attribute", "--run-dir", str(run), "--max-samples", "16", "--batch-size", "8",
            "--device", "cpu", "--quiet", "--out", str(out)]
    assert main(args + ["--compute-epochs", "0.5"]) == 0
    assert Attribution.load(out).settings["max_seconds"] == pytest.approx(1.5)
    assert main(args + ["--compute-epochs", "2", "--max-seconds", "1"]) == 0
    assert Attribution.load(out).settings["max_seconds"] == pytest.approx(1.0)
    bare = save_run(tmp_path / "bare", any_model("deepfm"), dataset=ds, metrics={}, seed=0,
                    train_config={})
    capsys.readouterr()
    assert main(["attribute", "--run-dir", str(bare), "--quiet", "--compute-epochs", "1",
                 "--out", str(out)]) == 2
    assert "no training epoch seconds recorded" in capsys.readouterr().err


def test_surrogate_points_reach_the_settings_and_are_checked(ds):
    from shaver.attribution.surrogate import points_of

    res = _run(any_model("deepfm"), ds, max_samples=8, control_variate="exact",
               surrogate_points=2)
    assert res.settings["control_variate"] == "path-gradient-2"
    assert points_of("path-gradient-3-sampled-8") == 3
    with pytest.raises(Exception, match="unknown control variate 'magic'"):
        points_of("magic")
    with pytest.raises(Exception, match="surrogate_points must be an integer >= 1"):
        _run(any_model("deepfm"), ds, max_samples=8, control_variate="sampled",
             surrogate_points=0)
