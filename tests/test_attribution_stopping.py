"""Stopping rules (cut stability vs SAGE), dtype="auto", and their bad input."""

from __future__ import annotations

import logging

import pytest
import torch

from shaver.attribution.accumulator import Accumulator
from shaver.attribution.estimator import hardware
from shaver.attribution.estimator.factory import make_engine
from shaver.attribution.permutations import sample_permutations
from shaver.attribution.stopping import CutStability, check_stop_options, cut_regret
from shaver.errors import AttributionError
from test_attribution_helpers import any_model, tiny_dataset
from test_attribution_helpers import quiet_attribute as _run

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("stop") / "ds")


def test_regret_is_zero_without_error_and_counts_value_not_entries():
    phi = torch.tensor([5.0, -4.0, 3.0, 2.0, 1.0, 0.5, 0.0, 0.0])
    check = cut_regret(phi, torch.zeros(8), {0.5: 4, 0.75: 2}, fraction=1e-9)
    assert check.stable and check.regret == {0.5: 0.0, 0.75: 0.0}
    # entries of nearly equal value: noise shuffles them, but a swap costs almost nothing
    near = torch.tensor([1.0, 1.0 + 1e-4, 1.0 - 1e-4, 1.0 + 2e-4])
    check = cut_regret(near, torch.full((4,), 0.1), {0.5: 2}, fraction=0.01, draws=8)
    assert check.uncertain[0.5] == 2.0  # every entry is within 2 SE of the threshold ...
    assert check.regret[0.5] < 2e-4 and check.stable  # ... and the cut loses < 0.02 %


def test_regret_matches_a_hand_computed_swap():
    """Two entries (values 3 and 1, K = 1): a draw cuts wrongly when noise flips their order;
    the regret of a wrong cut is (3 - 1) / 3. With huge errors half the draws flip."""
    phi = torch.tensor([3.0, 1.0])
    check = cut_regret(phi, torch.tensor([1e6, 1e6]), {0.5: 1}, fraction=0.5, draws=400)
    assert check.regret[0.5] == pytest.approx(0.5 * 2 / 3, abs=0.06)
    assert check.worst() == (0.5, check.regret[0.5])
    again = cut_regret(phi, torch.tensor([1e6, 1e6]), {0.5: 1}, fraction=0.5, draws=400)
    assert again.regret == check.regret  # seeded: a check is a function of the state


def test_rare_rows_with_huge_errors_do_not_hold_the_cut():
    """SAGE's max(stderr) is set by the rarest entries, whose |phi| is tiny (phi is
    frequency-weighted); the cut rule weighs them by what they could cost."""
    acc = Accumulator(1000)
    acc.sum = torch.linspace(1, 10, 1000, dtype=torch.float64) * 100
    acc.sumsq = acc.sum ** 2 / 100 + 1e-6
    acc.count = 100
    acc.sum[:3] = 1e-3  # three rare entries: tiny values, very noisy
    acc.sumsq[:3] += 1e6
    assert acc.convergence_ratio() > 0.5  # SAGE would keep walking
    rule = CutStability(1000, [0.5, 0.9], fraction=0.01)
    check = rule.check(acc, force=True)
    assert check.stable and max(check.regret.values()) < 0.01
    assert check.uncertain[0.9] >= 0.03  # they are uncertain, and count for little
    assert "regret" in rule.status() and rule.check(acc) is None  # throttled right after


def test_budgets_without_a_cut_are_skipped_and_warned(caplog):
    with caplog.at_level(logging.WARNING):
        rule = CutStability(10, [0.0, 1.0, 0.999])
    assert not rule.can_fire  # 0.999 of 10 entries keeps 0
    assert "keep no entry or every entry of this 10-entry table" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert CutStability(10, [0.5]).can_fire
    assert "cannot fire" not in caplog.text
    with caplog.at_level(logging.WARNING):
        check_stop_options("sage", 1e-20, [0.5], 0.01, 4)
    assert "below what float64" in caplog.text


@pytest.mark.parametrize("kw, message", [
    (dict(stop="never"), "stop must be one of cut, sage"),
    (dict(stop_budgets=[1.5]), "stop budgets are sparsities in [0, 1]"),
    (dict(stop_fraction=0.0), "stop fraction must be in (0, 1)"),
    (dict(stop_draws=0), "stop draws must be an integer >= 1"),
    (dict(min_passes=-1.0), "min_passes must be >= 0"),
])
def test_bad_stop_options(ds, kw, message):
    with pytest.raises(AttributionError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        _run(any_model("lr"), ds, **{"stop": "cut", **kw})


def test_cut_rule_stops_the_run_by_itself(ds):
    model = any_model("deepfm")
    size = ds.num_rows("train+val")
    res = _run(model, ds, stop="cut", stop_fraction=0.5, max_samples=50 * size, min_passes=1)
    assert res.settings["stop_reason"] == "stable"
    assert size <= res.count < 50 * size  # at least min_passes, then stable before the cap
    regret = res.settings["stop_cut"]["regret"]
    assert set(regret) == {"0.5", "0.8", "0.9", "0.95"}  # 0.99 / 0.999 keep no entry here
    assert all(v < 0.5 for v in regret.values())
    # an unreachable fraction runs to the cap instead
    res = _run(model, ds, stop="cut", stop_fraction=1e-12, max_samples=3 * size)
    assert res.settings["stop_reason"] == "max_samples"


def test_min_passes_below_one_stops_on_part_of_the_data(ds):
    size = ds.num_rows("train+val")
    res = _run(any_model("lr"), ds, stop="sage", tolerance=1e6, min_passes=0.25, batch_size=4)
    assert res.settings["stop_reason"] == "converged"
    assert size / 4 <= res.count < size / 4 + 4


def test_cli_stop_flags(ds, tmp_path, capsys):
    from shaver.attribution.result import Attribution
    from shaver.cli import main
    from shaver.train.checkpoint import save_run

    run = save_run(tmp_path / "run", any_model("deepfm"), dataset=ds, metrics={}, seed=0,
                   train_config={})
    out = tmp_path / "a.safetensors"
    assert main(["attribute", "--run-dir", str(run), "--stop", "cut", "--stop-budgets", "0.5,0.8",
                 "--stop-fraction", "0.9", "--stop-draws", "2", "--device", "cpu", "-q",
                 "--batch-size", "8", "--max-samples", "400", "--out", str(out)]) == 0
    result = Attribution.load(out)
    settings = result.settings
    assert settings["stop"] == "cut" and settings["stop_cut"]["budgets"] == [0.5, 0.8]
    assert settings["stop_reason"] == "stable" and result.count < 400
    capsys.readouterr()
    assert main(["attribute", "--run", str(run), "--stop-budgets", "half", "-q"]) == 2
    assert "--stop-budgets: expected sparsities" in capsys.readouterr().err


# -- dtype="auto" ---------------------------------------------------------------------------

def _walk(engine, dims=(30, 40, 20), batch=16):
    gen = torch.Generator().manual_seed(1)
    x = torch.stack([torch.randint(0, d, (batch,), generator=gen) + off for d, off in
                     zip(dims, [0, dims[0], dims[0] + dims[1]])], 1)
    y = (torch.rand(batch, generator=gen) < 0.4).float()
    perm = sample_permutations(0, 0, batch, engine.imputer.num_players)
    return engine.losses(x, y, perm)


def _imputer(model):
    from shaver.attribution.codebook import zero_codebook
    from shaver.attribution.imputer import PlaceholderImputer

    return PlaceholderImputer(model.eval(), zero_codebook(len(model.field_dims),
                                                          model.embedding.weight.shape[1]))


def test_auto_takes_the_first_candidate_that_agrees(monkeypatch):
    from shaver.attribution.estimator import fast

    model = any_model("deepfm", field_dims=[30, 40, 20], embed_dim=4)
    monkeypatch.setattr(fast, "auto_candidates", lambda device, has_int8: ["bf16", "int8"])
    engine = make_engine("fast", _imputer(model), dtype="auto")
    _walk(engine)
    assert engine.dtype_used == "bf16" and engine.agreement["bf16"] >= fast.BF16_MIN_CORR
    monkeypatch.setattr(fast, "BF16_MIN_CORR", 1.01)  # bf16 cannot agree: int8 is next
    engine = make_engine("fast", _imputer(model), dtype="auto")
    _walk(engine)
    if fast.int8_available(torch.device("cpu")):
        assert engine.dtype_used == "int8" and set(engine.agreement) == {"bf16", "int8"}
    monkeypatch.setattr(fast, "INT8_MIN_CORR", 1.01)
    engine = make_engine("fast", _imputer(model), dtype="auto")
    fp32 = make_engine("fast", _imputer(model), dtype="fp32")
    assert torch.equal(_walk(engine), _walk(fp32)) and engine.dtype_used == "fp32"


def test_auto_passes_over_int8_that_disagrees_to_bf16(monkeypatch, caplog):
    from shaver.attribution.estimator import fast

    if not fast.int8_available(torch.device("cpu")):
        pytest.skip("no int8 quantized engine in this torch build")
    model = any_model("deepfm", field_dims=[30, 40, 20], embed_dim=4)
    monkeypatch.setattr(fast, "auto_candidates", lambda device, has_int8: ["int8", "bf16"])
    monkeypatch.setattr(fast, "INT8_MIN_CORR", 1.01)  # int8 cannot agree: bf16 is next
    engine = make_engine("fast", _imputer(model), dtype="auto")
    with caplog.at_level(logging.WARNING):
        _walk(engine)
    assert engine.dtype_used == "bf16" and set(engine.agreement) == {"int8", "bf16"}
    assert "int8: credits correlate only" in caplog.text and "not used" in caplog.text
    assert "stays in fp32" not in caplog.text


def test_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(hardware, "bf16_native", lambda device: False)
    monkeypatch.setattr(hardware, "int8_available", lambda device: False)
    assert hardware.auto_candidates(torch.device("cpu"), True) == []
    monkeypatch.setattr(hardware, "int8_available", lambda device: True)
    assert hardware.auto_candidates(torch.device("cpu"), True) == ["int8"]
    assert hardware.auto_candidates(torch.device("cpu"), False) == []
    monkeypatch.setattr(hardware, "bf16_native", lambda device: True)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16", "avx2"}))
    assert hardware.auto_candidates(torch.device("cpu"), True) == ["bf16", "int8"]
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16", "avx512_vnni"}))
    assert hardware.auto_candidates(torch.device("cpu"), True) == ["int8", "bf16"]
    assert isinstance(hardware.bf16_native(torch.device("cpu")), bool)


def test_cpu_summary_names_the_isa_level_and_the_low_precision_units(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(hardware, "cpu_flags",
                        lambda: frozenset({"sse4_2", "amx_bf16", "avx512_bf16", "avx512f"}))
    assert hardware.cpu_summary() == "AVX512 (amx_bf16, avx512_bf16, avx512f)"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert hardware.cpu_summary() == "AVX2 (no bf16/int8 units)"


@pytest.mark.parametrize("flags, bf16, int8, want", [
    ({"avx2"}, False, True, ["int8"]),  # AVX2 only: int8 still beats fp32
    ({"avx2"}, False, False, []),
    ({"avx512_bf16", "avx512f"}, True, True, ["bf16", "int8"]),  # bf16 units, no int8 dot
    ({"amx_bf16", "amx_tile"}, True, True, ["bf16", "int8"]),
    ({"avx512_bf16", "avx512_vnni"}, True, True, ["int8", "bf16"]),  # the EPYC
    ({"amx_bf16", "amx_int8"}, True, True, ["int8", "bf16"]),
    ({"avx_vnni", "avx2"}, False, True, ["int8"]),
    ({"avx512_bf16", "avx512_vnni"}, True, False, ["bf16"]),  # no int8 path for this model
])
def test_auto_order_from_cpu_features(flags, bf16, int8, want):
    assert hardware.precision_order("cpu", frozenset(flags), bf16=bf16, int8=int8) == want
    # deterministic: a function of the features, whatever their order or a second call
    assert hardware.precision_order("cpu", set(sorted(flags)), bf16=bf16, int8=int8) == want


def test_auto_order_on_gpus_is_bf16_whatever_the_host_cpu():
    vnni = frozenset({"avx512_vnni", "amx_int8"})
    assert hardware.precision_order("cuda", vnni, bf16=True, int8=True) == ["bf16"]
    assert hardware.precision_order("cuda", vnni, bf16=False, int8=False) == []


def test_reference_engine_and_generic_models_run_auto_in_fp32():
    from test_attribution_helpers import DIMS, TanhNet

    model = any_model("deepfm", field_dims=[30, 40, 20], embed_dim=4)
    assert make_engine("reference", _imputer(model), dtype="auto").dtype == "fp32"
    plain = TanhNet(DIMS, embed_dim=2)
    engine = make_engine("fast", _imputer(plain), dtype="auto")
    assert "int8" not in engine.candidates


def test_a_precision_the_cpu_lacks_falls_back_with_a_message(monkeypatch, caplog):
    from shaver.attribution.estimator import fast

    monkeypatch.setattr(fast, "int8_available", lambda device: False)
    model = any_model("deepfm", field_dims=[30, 40, 20], embed_dim=4)
    with caplog.at_level(logging.WARNING):
        engine = make_engine("fast", _imputer(model), dtype="int8")
    assert engine.dtype_used == "fp32" and "stays in fp32" in caplog.text
    monkeypatch.setattr(fast, "bf16_native", lambda device: False)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_engine("fast", _imputer(model), dtype="bf16")
    assert "no native bf16" in caplog.text


def test_attribute_records_the_precision_it_used(ds, monkeypatch):
    from shaver.attribution.estimator import fast

    monkeypatch.setattr(fast, "auto_candidates", lambda device, has_int8: [])
    s = _run(any_model("deepfm"), ds, max_samples=16, dtype="auto").settings
    assert (s["dtype"], s["dtype_used"], s["dtype_agreement"]) == ("auto", "fp32", {})
    assert s["cpu"] == hardware.cpu_summary()
    monkeypatch.setattr(fast, "auto_candidates", lambda device, has_int8: ["bf16"])
    monkeypatch.setattr(fast, "BF16_MIN_CORR", -1.0)  # any agreement will do: bf16 is used
    s = _run(any_model("deepfm"), ds, max_samples=16, dtype="auto").settings
    assert (s["dtype"], s["dtype_used"], list(s["dtype_agreement"])) == ("auto", "bf16", ["bf16"])


@pytest.mark.parametrize("cv", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["plain", "control-variate"])
def test_a_part_of_a_pass_is_unbiased(ds, cv):
    """Walks on a third of D (a prefix of the seeded random stream: a uniform random sample)
    estimate phi over ALL of D without bias: rows not walked count as 0 (plain) or keep the
    surrogate's exact mean over D (control variate). Mean over 24 seeds vs exact Shapley."""
    from shaver.attribution.exact import exact_shapley
    from shaver.attribution.imputer import PlaceholderImputer

    model = any_model("deepfm")
    size = ds.num_rows("train+val")
    runs = [_run(model, ds, max_samples=size // 3, seed=s, control_variate=cv).phi.double()
            for s in range(24)]
    phis = torch.stack(runs).reshape(len(runs), -1)
    x, y = (torch.from_numpy(a) for a in ds.arrays("train+val"))
    first = _run(model, ds, max_samples=1)
    imputer = PlaceholderImputer(model.cpu(), first.codebook)
    exact = exact_shapley(imputer, x, y, ds.num_features).double().reshape(-1)
    mean, se = phis.mean(0), phis.std(0) / len(runs) ** 0.5
    z = (mean - exact).abs() / (se + 1e-12)
    assert float(z.max()) < 4.5, z.max()
    assert float((phis[0] - exact).abs().max()) > 0  # one run is an estimate, not exact


def test_cut_checks_follow_a_schedule_in_samples_not_seconds(ds):
    acc = Accumulator(4)
    acc.sum, acc.count = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64), 800
    rule = CutStability(4, [0.5])
    assert rule.check(acc) is not None  # the first check runs at once
    acc.count = 899  # < 800 * 1.125
    assert rule.check(acc) is None and rule.check(acc, force=True) is not None
    acc.count = 1011
    assert rule.check(acc) is None
    acc.count = 1012  # >= 899 * 1.125 = 1011.4 (the forced check moved the schedule)
    assert rule.check(acc) is not None
    size = ds.num_rows("train+val")
    runs = [_run(any_model("deepfm"), ds, stop="cut", stop_fraction=0.2, batch_size=2,
                 max_samples=50 * size) for _ in range(2)]
    assert runs[0].settings["stop_reason"] == "stable"
    assert runs[0].count == runs[1].count and torch.equal(runs[0].phi, runs[1].phi)
