"""Attribution updates: new rows merge into the running state, decay, fingerprints, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shaver.attribution.accumulator import Accumulator
from shaver.attribution.update import merge_decayed, state_settings, update_attribution
from shaver.data.store import write_prepared
from shaver.errors import AttributionError, FingerprintMismatch
from test_attribution_helpers import quiet_attribute, registry_model, tiny_dataset

DIMS = [3, 4, 2]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("upd") / "ds", rows=200)


def _attribute_with_state(model, ds, path, **kw):
    """attribute() that keeps its running state beside ``path`` (as the CLI does)."""
    state = path.with_name(path.stem + ".state.safetensors")
    res = quiet_attribute(model, ds, checkpoint_path=state, **kw)
    res.save(path)
    return res, state


@pytest.mark.parametrize("placeholder", ["zero", "codebook"])
def test_update_equals_a_fresh_attribution_within_standard_errors(ds, tmp_path, placeholder):
    model = registry_model("deepfm", DIMS)
    passes = 20
    old, state = _attribute_with_state(model, ds, tmp_path / "a.safetensors", data="train",
                                       placeholder=placeholder,
                                       max_samples=passes * ds.num_rows("train"))
    new, merged, _ = update_attribution(model, tmp_path / "a.safetensors", state, ds, data="val")
    assert new.count == passes * ds.num_rows("train+val") == merged.count
    assert new.settings["updates"][0]["samples"] == passes * ds.num_rows("val")
    fresh = quiet_attribute(model, ds, data="train+val", placeholder=placeholder, seed=11,
                            max_samples=passes * ds.num_rows("train+val"))
    if placeholder == "codebook":  # the update keeps the game: the old codebook
        assert torch.equal(new.codebook, old.codebook)
        fresh = quiet_attribute(model, ds, data="train+val", placeholder="codebook", seed=11,
                                max_samples=passes * ds.num_rows("train+val"),
                                codebook=old.codebook)
    z = (new.phi - fresh.phi).abs() / (new.stderr ** 2 + fresh.stderr ** 2).sqrt().clamp_min(1e-12)
    seen = fresh.stderr > 0
    assert float((z[seen] < 4).float().mean()) >= 0.99
    # the bins of budget-aware scores are merged too: their shares still add up to phi
    assert new.bins is not None and new.bin_edges == old.bin_edges
    assert torch.allclose(new.bins.double().sum(0), new.phi.double(), atol=1e-5)
    # the update moved phi towards the fresh value: old alone is further away on the whole
    assert float((new.phi - fresh.phi).abs().sum()) < float((old.phi - fresh.phi).abs().sum())


def test_merge_is_the_sum_of_states_and_decay_weights_old_evidence(ds, tmp_path):
    model = registry_model("fm", DIMS)
    _, state = _attribute_with_state(model, ds, tmp_path / "a.safetensors", data="train",
                                     max_samples=3 * ds.num_rows("train"))
    old = Accumulator.load(state, settings=state_settings(
        __import__("shaver").Attribution.load(tmp_path / "a.safetensors")))[0]
    plain, merged, _ = update_attribution(model, tmp_path / "a.safetensors", state, ds,
                                          data="val")
    rows = ds.num_rows("val")
    decayed, merged_d, _ = update_attribution(model, tmp_path / "a.safetensors", state, ds,
                                              data="val", half_life=rows)
    assert decayed.settings["updates"][0]["decay"] == pytest.approx(0.5)
    new_sum = merged.sum - old.sum  # the same walks (same seed) in both updates
    np.testing.assert_allclose(merged_d.sum, 0.5 * old.sum + new_sum, rtol=1e-12, atol=1e-15)
    assert merged_d.count == pytest.approx(0.5 * old.count + 3 * rows)
    expected = (0.5 * old.sum + new_sum) / (0.5 * old.count + 3 * rows)
    np.testing.assert_allclose(decayed.phi.double().view(-1), expected, rtol=1e-5, atol=1e-7)
    # effective count (sum w)^2 / sum w^2 < the walks made: the standard errors grow
    eff = decayed.settings["effective_count"]
    assert eff == pytest.approx(merged_d.count ** 2 / (0.25 * old.count + 3 * rows))
    assert eff < old.count + 3 * rows == merged.count == plain.settings["effective_count"]
    assert float(decayed.stderr.sum()) > float(plain.stderr.sum())


def test_decayed_state_round_trips_and_updates_chain(ds, tmp_path):
    model = registry_model("fm", DIMS)
    _, state = _attribute_with_state(model, ds, tmp_path / "a.safetensors", data="train",
                                     max_samples=ds.num_rows("train"))
    first, merged, settings = update_attribution(model, tmp_path / "a.safetensors", state, ds,
                                                 data="val", half_life=7)
    merged.save(tmp_path / "b.state.safetensors", cursor=0, settings=settings)
    first.save(tmp_path / "b.safetensors")
    back, _ = Accumulator.load(tmp_path / "b.state.safetensors", settings=settings)
    assert back.count == pytest.approx(merged.count) and not float(back.count).is_integer()
    second, merged2, _ = update_attribution(model, tmp_path / "b.safetensors",
                                            tmp_path / "b.state.safetensors", ds, data="test")
    assert len(second.settings["updates"]) == 2
    assert merged2.count == pytest.approx(merged.count + ds.num_rows("test"), rel=1e-9)


def test_merge_refuses_mixed_control_variates():
    a, b = Accumulator(4), Accumulator(4)
    a.offset = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(AttributionError, match="with a control variate and one without"):
        merge_decayed(a, b, 1.0, None)


def test_update_refuses_another_model_vocabulary_or_old_rows(ds, tmp_path):
    model = registry_model("deepfm", DIMS)
    old, state = _attribute_with_state(model, ds, tmp_path / "a.safetensors", data="train",
                                       max_samples=40)
    other = registry_model("deepfm", DIMS, seed=5)
    with pytest.raises(FingerprintMismatch) as info:
        update_attribution(other, tmp_path / "a.safetensors", state, ds, data="val")
    assert old.model_fingerprint in str(info.value)
    assert __import__("shaver.train.checkpoint").train.checkpoint.model_fingerprint(other) \
        in str(info.value)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 2, (20, 3)) + np.array([0, 3, 7])
    vocab = {f"f{i}": ["<OOV>"] + [f"other{j}" for j in range(1, d)] for i, d in enumerate(DIMS)}
    foreign = write_prepared(tmp_path / "foreign", field_names=["f0", "f1", "f2"],
                             vocabularies=vocab,
                             splits={"train": (ids, np.zeros(20, np.float32), np.arange(20))},
                             frequencies=np.bincount(ids.ravel(), minlength=9))
    with pytest.raises(FingerprintMismatch) as info:
        update_attribution(model, tmp_path / "a.safetensors", state, foreign, data="train")
    assert ds.fingerprint in str(info.value) and foreign.fingerprint in str(info.value)
    with pytest.raises(AttributionError, match="split\\(s\\) train are already in this"):
        update_attribution(model, tmp_path / "a.safetensors", state, ds, data="train+val")
    with pytest.raises(AttributionError, match="half_life must be > 0"):
        update_attribution(model, tmp_path / "a.safetensors", state, ds, data="val",
                           half_life=0)
    quiet_attribute(model, ds, data="train", max_samples=80,
                    checkpoint_path=tmp_path / "other.state.safetensors")
    with pytest.raises(AttributionError, match="belong to different runs"):
        update_attribution(model, tmp_path / "a.safetensors",
                           tmp_path / "other.state.safetensors", ds, data="val")


def test_cli_update(tmp_path, capsys):
    from shaver.attribution.result import Attribution
    from shaver.cli import main
    from shaver.train.checkpoint import save_run

    dataset = tiny_dataset(tmp_path / "ds", rows=120)
    model = registry_model("deepfm", DIMS)
    run = save_run(tmp_path / "run", model, dataset=dataset, metrics={}, seed=0, train_config={})
    base = ["attribute", "--run", str(run), "--device", "cpu", "-q", "--batch-size", "16"]
    assert main([*base, "--data", "train", "--max-samples", "84", "--min-passes", "1"]) == 0
    first = Attribution.load(run / "attribution-codebook.safetensors")
    assert main([*base, "--update", "--data", "val", "--half-life", "1000"]) == 0
    out = capsys.readouterr().out
    assert "updated with 18 new rows (18 walks" in out
    updated = Attribution.load(run / "attribution-codebook.safetensors")
    assert updated.count == round(first.count * 0.5 ** (18 / 1000) + 18) == 101
    assert main([*base, "--update", "--data", "val"]) == 2
    assert "split(s) val are already in this attribution" in capsys.readouterr().err
    assert main([*base, "--update", "--data", "test", "--antithetic"]) == 2
    assert "drop --antithetic" in capsys.readouterr().err
    assert main([*base, "--half-life", "5", "--data", "test"]) == 2
    assert "--attribution and --half-life go with --update" in capsys.readouterr().err
    assert main([*base, "--update", "--data", "test", "--attribution",
                 str(tmp_path / "none.safetensors")]) == 2
    assert "--update needs the attribution and its running state" in capsys.readouterr().err


def test_refreshed_model_reuses_the_old_attribution_without_bias(ds):
    from shaver.attribution.refresh import refresh_attribution

    old_model = registry_model("deepfm", DIMS)
    new_model = registry_model("deepfm", DIMS)
    with torch.no_grad():  # a "fine-tuned" model: small changes everywhere
        gen = torch.Generator().manual_seed(7)
        for p in new_model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    rows = ds.num_rows("train+val")
    old = quiet_attribute(old_model, ds, max_samples=40 * rows)
    same = refresh_attribution(old_model, old_model, old, ds, samples=20)
    assert torch.equal(same.phi, old.phi) and torch.allclose(same.stderr, old.stderr)
    refreshed = refresh_attribution(new_model, old_model, old, ds, samples=5 * rows, seed=4)
    fresh = quiet_attribute(new_model, ds, max_samples=40 * rows, seed=9)
    assert refreshed.model_fingerprint == fresh.model_fingerprint
    assert torch.allclose(refreshed.codebook, fresh.codebook)
    z = (refreshed.phi - fresh.phi).abs() / (refreshed.stderr ** 2 + fresh.stderr ** 2).sqrt()
    seen = fresh.stderr > 0
    assert float((z[seen] < 4).float().mean()) >= 0.99
    # reusing beats ignoring: the old phi alone is further from the fresh one
    assert float((refreshed.phi - fresh.phi).abs().sum()) < float((old.phi - fresh.phi).abs().sum())
    with pytest.raises(FingerprintMismatch, match="the previous model passed has fingerprint"):
        refresh_attribution(new_model, new_model, old, ds, samples=5)
    with pytest.raises(AttributionError, match="samples must be >= 1"):
        refresh_attribution(new_model, old_model, old, ds, samples=0)
    with pytest.raises(AttributionError, match="seed 3 is the old attribution's"):
        refresh_attribution(new_model, old_model, old, ds, samples=5, seed=3)


def test_refresh_and_codebook_bad_input(ds, tmp_path):
    from shaver.attribution.refresh import refresh_attribution

    model = registry_model("fm", DIMS)
    old = quiet_attribute(model, ds, max_samples=20)
    other = tiny_dataset(tmp_path / "other", dims=[3, 4, 3])
    with pytest.raises(FingerprintMismatch, match=f"{other.fingerprint}"):
        refresh_attribution(model, model, old, other, samples=5)
    wider = registry_model("fm", [3, 4, 3])
    with pytest.raises(AttributionError, match="another vocabulary"):
        refresh_attribution(wider, model, old, ds, samples=5)
    with pytest.raises(AttributionError, match=r"codebook must be \(3, 2\), got \(2, 2\)"):
        quiet_attribute(model, ds, max_samples=5, codebook=torch.zeros(2, 2))
    broken = registry_model("fm", DIMS)
    with torch.no_grad():
        broken.embedding.weight[0, 0] = float("nan")
    with pytest.raises(AttributionError, match="non-finite credits on samples 0"):
        refresh_attribution(broken, model, old, ds, samples=5)


def test_cli_refresh_from(tmp_path, capsys):
    from shaver.attribution.result import Attribution
    from shaver.cli import main
    from shaver.train.checkpoint import model_fingerprint, save_run

    dataset = tiny_dataset(tmp_path / "ds", rows=120)
    old_model = registry_model("deepfm", DIMS)
    new_model = registry_model("deepfm", DIMS, seed=3)
    old_run = save_run(tmp_path / "old", old_model, dataset=dataset, metrics={}, seed=0,
                       train_config={})
    new_run = save_run(tmp_path / "new", new_model, dataset=dataset, metrics={}, seed=0,
                       train_config={})
    opts = ["--device", "cpu", "-q", "--batch-size", "16"]
    assert main(["attribute", "--run", str(old_run), "--max-samples", "50", *opts]) == 0
    capsys.readouterr()
    assert main(["attribute", "--run", str(new_run), "--refresh-from", str(old_run),
                 "--max-samples", "30", *opts]) == 0
    assert "with 30 paired walks" in capsys.readouterr().out
    refreshed = Attribution.load(new_run / "attribution-codebook.safetensors")
    assert refreshed.model_fingerprint == model_fingerprint(new_model)
    assert refreshed.settings["refreshed_from"] == model_fingerprint(old_model)
    assert main(["attribute", "--run", str(new_run), "--refresh-from", str(old_run),
                 "--update", *opts]) == 2
    assert "--refresh-from and --update" in capsys.readouterr().err


def test_cli_under_torchrun(tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    from shaver.attribution import update_cli
    from shaver.cli import main
    from shaver.train.checkpoint import save_run

    dataset = tiny_dataset(tmp_path / "ds", rows=120)
    run = save_run(tmp_path / "run", registry_model("fm", DIMS), dataset=dataset, metrics={},
                   seed=0, train_config={})
    opts = ["--run", str(run), "--device", "cpu", "-q"]
    assert main(["attribute", *opts, "--data", "train", "--max-samples", "20"]) == 0
    path = run / "attribution-codebook.safetensors"
    before = path.read_bytes()
    rank1 = SimpleNamespace(world=2, is_main=False)  # what the CLI sees on rank 1 of 2
    monkeypatch.setattr(update_cli, "DistContext", SimpleNamespace(current=lambda: rank1))
    assert main(["attribute", *opts, "--update", "--data", "val"]) == 0
    assert path.read_bytes() == before  # only the main rank writes
    assert main(["attribute", *opts, "--refresh-from", str(run)]) == 2
    assert "--refresh-from runs in one process" in capsys.readouterr().err


def test_update_takes_a_complete_sampled_control_variate_and_refuses_a_partial_one(ds, tmp_path):
    model = registry_model("deepfm", DIMS)
    rows = ds.num_rows("train")
    _, state = _attribute_with_state(model, ds, tmp_path / "a.safetensors", data="train",
                                     max_samples=rows // 2, control_variate="sampled",
                                     surrogate_rows=2)
    new, merged, _ = update_attribution(model, tmp_path / "a.safetensors", state, ds, data="val")
    assert merged.cv is None and merged.offset is not None and new.count == merged.count
    _, state = _attribute_with_state(model, ds, tmp_path / "b.safetensors", data="train",
                                     max_samples=rows // 4, control_variate="sampled",
                                     surrogate_rows=2)
    with pytest.raises(AttributionError, match="rerun it with --control-variate exact"):
        update_attribution(model, tmp_path / "b.safetensors", state, ds, data="val")


@pytest.mark.parametrize("step", ["attribution", "rename"])
def test_an_update_killed_between_its_two_writes_is_settled_by_the_next(tmp_path, monkeypatch,
                                                                       step):
    """Killed before the attribution is replaced, the next update rolls the pending state back
    and reruns; killed after, it puts the pending state in place. Either way the updates that
    follow give the same files as a run never interrupted."""
    from shaver.attribution import update as update_mod
    from shaver.attribution.result import Attribution
    from shaver.cli import main
    from shaver.train.checkpoint import save_run

    dataset = tiny_dataset(tmp_path / "ds", rows=120)
    model = registry_model("fm", DIMS)

    def attributed(name):
        run = save_run(tmp_path / name, model, dataset=dataset, metrics={}, seed=0,
                       train_config={})
        base = ["attribute", "--run", str(run), "--device", "cpu", "-q", "--batch-size", "16"]
        assert main([*base, "--data", "train", "--max-samples", "84"]) == 0
        return run, base

    clean, base = attributed("clean")
    assert main([*base, "--update", "--data", "val"]) == 0
    assert main([*base, "--update", "--data", "test"]) == 0

    run, base = attributed("killed")
    path = run / "attribution-codebook.safetensors"
    state = run / "attribution-codebook.state.safetensors"
    pending = run / "attribution-codebook.state.safetensors.pending"
    before = (path.read_bytes(), state.read_bytes())

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stops the command there, as a kill would

    target = (Attribution, "save") if step == "attribution" else (update_mod, "_promote")
    with monkeypatch.context() as patch:
        patch.setattr(*target, killed)
        assert main([*base, "--update", "--data", "val"]) == 130  # "interrupted"
    assert pending.is_file()
    if step == "attribution":  # the old pair stands; the update reruns
        assert (path.read_bytes(), state.read_bytes()) == before
        assert main([*base, "--update", "--data", "val"]) == 0
    else:  # the new attribution was written: the pending state is its state
        assert path.read_bytes() != before[0] and state.read_bytes() == before[1]
    assert main([*base, "--update", "--data", "test"]) == 0
    assert not pending.exists()
    got, want = Attribution.load(path), Attribution.load(clean / path.name)
    assert torch.equal(got.phi, want.phi) and torch.equal(got.stderr, want.stderr)
    assert got.count == want.count == 120
    assert state_settings(got) == state_settings(want)  # the same state digest
    acc, _ = Accumulator.load(state, settings=state_settings(got))
    ref, _ = Accumulator.load(clean / state.name, settings=state_settings(want))
    assert torch.equal(acc.sum, ref.sum) and torch.equal(acc.sumsq, ref.sumsq)


def test_settle_removes_a_pending_state_no_attribution_names(ds, tmp_path, caplog):
    from shaver.attribution.update import pending_path, settle_update

    model = registry_model("fm", DIMS)
    _, state = _attribute_with_state(model, ds, tmp_path / "a.safetensors", data="train",
                                     max_samples=ds.num_rows("train"))
    pending = pending_path(state)
    assert pending.name == "a.state.safetensors.pending"
    before = state.read_bytes()
    pending.write_bytes(b"not a state")
    settle_update(tmp_path / "a.safetensors", state)
    assert not pending.exists() and state.read_bytes() == before
    assert "never replaced the attribution" in caplog.text
    settle_update(tmp_path / "a.safetensors", state)  # nothing pending: nothing to do
    assert state.read_bytes() == before
