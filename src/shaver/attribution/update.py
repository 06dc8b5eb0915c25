"""Attributions that stay current: continue an attribution on NEW rows of the same model and
vocabulary, merging the accumulators, with an optional exponential decay of old evidence.

    >>> updated, state = update_attribution(model, "attr.safetensors", "attr.state.safetensors",
    ...                                     new_dataset, data="train", half_life=100_000)

Why a merge is correct: phi over D_old + D_new is the row-weighted mean of the per-row
Shapley values, and an attribution's running sums are sums of per-walk credits. The update
walks the new rows at the SAME rate as the old attribution walked its rows (samples per row
= the old run's passes), with the same placeholder (the old codebook: the game must not
change) and the same options, so adding the sums (and the sample counts) gives exactly the
estimator a fresh run over old + new rows at that rate would give; only the random
permutations differ. The result agrees with a fresh attribution within the standard errors.

Decay: with ``half_life`` H (in rows of new data), old evidence is down-weighted by
``gamma = 0.5 ** (new_rows / H)``: sums, squared sums and the sample count of the old state
are multiplied by gamma before the new ones are added. phi is then the exponentially
weighted mean; its standard error uses the effective sample count
``(sum of weights)^2 / (sum of squared weights)``, tracked across updates.

A control variate (``--control-variate`` runs) carries over: the new rows' exact surrogate
mean is computed (one cheap pass over the new rows) and the offsets are merged with the
same weights as the sums.

Out of scope: rows whose values are new to the vocabulary (a table that grows is another
model and another game; encoded with the old feature map they are its OOV ids). A model
refreshed on new data is another game too: it cannot be updated, but
:mod:`shaver.attribution.refresh` reuses the old attribution as a control variate.

Saving: an update replaces two files, the attribution and its running state, and a kill can
fall between the two. :func:`save_update` writes the new state beside the old one as
``<state>.pending``, then the attribution, then renames the pending state over the old
one; the new attribution's state settings carry a digest of its state's sums
(``state_digest``). :func:`settle_update`, run before every update, finishes an interrupted
save: a pending state that the attribution names is the attribution's state (renamed into
place); one that it does not name belongs to an update that never replaced the
attribution (removed; the old pair stands).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shaver.attribution.accumulator import Accumulator, settings_hash
from shaver.attribution.binned import BinnedCredits
from shaver.attribution.distributed import DistContext
from shaver.attribution.estimator.factory import make_engine
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.result import Attribution
from shaver.attribution.runner import StopRule, StreamConfig, run_stream
from shaver.attribution.sampling import SampleSource, parse_data
from shaver.attribution.surrogate import path_credits, points_of, surrogate_mean
from shaver.data.store import PreparedDataset
from shaver.errors import AttributionError, FingerprintMismatch
from shaver.fileio import read_tensors
from shaver.train.checkpoint import model_fingerprint

log = logging.getLogger(__name__)
#: Keys of an attribution's settings that identify its running state (api.attribute's).
STATE_KEYS = ("format", "placeholder", "data", "seed", "antithetic", "dtype",
              "model_fingerprint", "dataset_fingerprint", "control_variate", "bins")


def state_settings(attribution: Attribution) -> dict[str, Any]:
    """The settings its running state was saved with (recorded by an update, else rebuilt
    from the keys :func:`shaver.attribution.api.attribute` hashes)."""
    s = attribution.settings
    if "state_settings" in s:
        return dict(s["state_settings"])
    return {k: s[k] for k in STATE_KEYS if k in s}


def check_same_game(model: nn.Module, attribution: Attribution, dataset: PreparedDataset) -> None:
    """:class:`FingerprintMismatch` naming both fingerprints unless ``model`` and ``dataset``
    are the attribution's model and vocabulary (feature map)."""
    found = model_fingerprint(model)
    if attribution.model_fingerprint != found:
        raise FingerprintMismatch(
            f"{attribution.path or 'the attribution'}: computed for model "
            f"{attribution.model_fingerprint}, but this "
            f"model's fingerprint is {found}: an update continues the same model (a refreshed "
            f"model needs a fresh attribution)")
    if attribution.dataset_fingerprint != dataset.fingerprint:
        raise FingerprintMismatch(
            f"{attribution.path or 'the attribution'}: computed on a dataset with fingerprint "
            f"{attribution.dataset_fingerprint}, but {dataset.path} has fingerprint "
            f"{dataset.fingerprint} (another vocabulary: rows must be encoded with the "
            f"attribution's feature map)")


def _check_new_rows(attribution: Attribution, dataset: PreparedDataset, data: str) -> None:
    """Refuse data the attribution already holds (same dataset directory, shared splits)."""
    history = [attribution.settings.get("dataset_path"), *(
        u.get("dataset_path") for u in attribution.settings.get("updates", []))]
    seen = [attribution.settings.get("data", ""),
            *(u.get("data", "") for u in attribution.settings.get("updates", []))]
    new_splits = set(parse_data(data)[0])
    here = str(Path(dataset.path).resolve())
    for path, spec in zip(history, seen):
        if path is None:
            log.warning("the attribution does not record its dataset directory: cannot check "
                        "that %s (%s) holds new rows", dataset.path, data)
            continue
        if path != here:
            continue
        shared = new_splits & set(parse_data(spec)[0]) if spec else set()
        if shared:
            raise AttributionError(
                f"{dataset.path}: split(s) {', '.join(sorted(shared))} are already in this "
                f"attribution (data {spec!r}); an update takes NEW rows")


def update_attribution(model: nn.Module, attribution: Attribution | str | Path,
                       state_path: str | Path, dataset: PreparedDataset, *, data: str = "train",
                       half_life: float | None = None, samples: int | None = None,
                       seed: int | None = None, batch_size: int = 1024, engine: str = "fast",
                       device: str | torch.device = "cpu", quiet: bool = True
                       ) -> tuple[Attribution, Accumulator, dict[str, Any]]:
    """Continue ``attribution`` (with its running state at ``state_path``) on the rows
    ``data`` of ``dataset``; returns (updated attribution, merged state, state settings).

    ``samples``: walks over the new rows (default: the old run's walks per row times the new
    rows, so that the merge is unbiased; see the module docstring). ``half_life``: rows of
    new data after which old evidence weighs half (None: no decay). ``seed``: of the new
    walks (default: the old seed plus the number of earlier updates plus one).
    """
    if not isinstance(attribution, Attribution):
        settle_update(attribution, state_path)
    old = attribution if isinstance(attribution, Attribution) else Attribution.load(attribution)
    check_same_game(model, old, dataset)
    _check_new_rows(old, dataset, data)
    if half_life is not None and not half_life > 0:
        raise AttributionError(f"half_life must be > 0 rows (or None), got {half_life}")
    settings = state_settings(old)
    acc_old, cursor = Accumulator.load(state_path, settings=settings, device=device)
    if acc_old.cv is not None:  # a sampled control variate: only a complete sample is exact
        if not acc_old.cv.complete:
            raise AttributionError(
                f"{state_path}: this attribution estimated its control variate's mean on "
                f"{acc_old.cv.count} of {acc_old.cv.size} rows (--control-variate sampled); "
                f"an update needs the exact mean: rerun it with --control-variate exact, or "
                f"longer (the sample covers the data once 1/--surrogate-rows of a pass is "
                f"walked)")
        acc_old.offset, acc_old.cv = acc_old.cv.mean(), None
    if acc_old.count != old.count and round(acc_old.count) != old.count:
        raise AttributionError(f"{state_path}: the running state holds {acc_old.count} samples, "
                               f"the attribution {old.count}: they belong to different runs")
    updates = list(old.settings.get("updates", []))
    seed = int(settings.get("seed", 0)) + len(updates) + 1 if seed is None else int(seed)
    source = SampleSource(dataset, data, seed=seed)
    old_rows = float(old.settings.get("data_rows") or acc_old.count)
    walks = samples if samples is not None else max(1, round(acc_old.count / old_rows
                                                             * source.size))
    began = time.monotonic()
    acc_new, offset_new = _walk_new_rows(model, old, source, walks, seed, batch_size, engine,
                                         device, bool(settings.get("antithetic")),
                                         settings.get("control_variate"), quiet,
                                         None if acc_old.binned is None else acc_old.binned.edges)
    gamma = 1.0 if half_life is None else 0.5 ** (source.size / float(half_life))
    sum_w2_old = float(old.settings.get("sum_w2", acc_old.count))
    merged = merge_decayed(acc_old, acc_new, gamma, offset_new)
    sum_w2 = gamma * gamma * sum_w2_old + acc_new.count
    record = {"data": data, "dataset_path": str(Path(dataset.path).resolve()),
              "rows": source.size, "samples": walks, "seed": seed, "half_life": half_life,
              "decay": gamma, "seconds": time.monotonic() - began}
    new_settings = {**settings, "updates": len(updates) + 1, "state_digest": state_digest(merged)}
    info = {**old.settings, "updates": updates + [record], "state_settings": new_settings,
            "data_rows": gamma * old_rows + source.size, "sum_w2": sum_w2,
            "effective_count": merged.count ** 2 / sum_w2 if sum_w2 else 0.0,
            "passes": merged.count / (gamma * old_rows + source.size),
            "convergence_ratio": merged.convergence_ratio()}
    info.setdefault("dataset_path", None)
    n, d = old.shape
    stderr = merged.stderr() * (merged.count / max(info["effective_count"], 1e-12)) ** 0.5
    binned = merged.binned
    result = Attribution(phi=merged.phi().view(n, d), stderr=stderr.view(n, d),
                         count=round(merged.count), codebook=old.codebook,
                         placeholder=old.placeholder, settings=info,
                         model_fingerprint=old.model_fingerprint,
                         dataset_fingerprint=old.dataset_fingerprint, field_dims=old.field_dims,
                         bins=None if binned is None else
                         binned.shares(merged.count, merged.offset).view(-1, n, d),
                         bin_edges=[] if binned is None else binned.edges)
    del cursor  # the old stream's cursor has no meaning after new rows were merged
    return result, merged, new_settings


def state_digest(acc: Accumulator) -> str:
    """16 hex chars naming a running state by its sums, squared sums and count: the
    attribution an update writes records the digest of its state."""
    digest = hashlib.sha256(repr(float(acc.count)).encode())
    for tensor in (acc.sum, acc.sumsq):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def pending_path(state_path: str | Path) -> Path:
    """Where :func:`save_update` writes a state before the attribution is replaced."""
    state_path = Path(state_path)
    return state_path.with_name(state_path.name + ".pending")


def save_update(result: Attribution, merged: Accumulator, settings: dict[str, Any],
                out: str | Path, state_path: str | Path) -> None:
    """Write an update's attribution to ``out`` and its state to ``state_path`` so that a
    kill at any moment leaves a pair that :func:`settle_update` completes or rolls back."""
    pending = pending_path(state_path)
    merged.save(pending, cursor=0, settings=settings)
    result.save(out)
    _promote(pending, Path(state_path))


def _promote(pending: Path, state_path: Path) -> None:
    try:
        os.replace(pending, state_path)
    except FileNotFoundError:  # under torchrun another rank settled it first
        if not state_path.is_file():
            raise


def settle_update(attribution_path: str | Path, state_path: str | Path) -> None:
    """Finish a save that :func:`save_update` began and a kill interrupted: the pending
    state becomes the state if the attribution at ``attribution_path`` names it (the
    attribution was replaced), else it is removed (the old attribution and state stand)."""
    pending = pending_path(state_path)
    if not pending.is_file():
        return
    named = None
    if Path(attribution_path).is_file():
        named = settings_hash(state_settings(Attribution.load(attribution_path)))
    try:
        _, meta = read_tensors(pending, AttributionError)
    except AttributionError:  # not a state save_update wrote: no attribution names it
        meta = {}
    if named is not None and meta.get("settings_hash") == named:
        log.warning("%s: an interrupted update had written the attribution; its running "
                    "state %s is put in place", attribution_path, pending.name)
        _promote(pending, Path(state_path))
    else:
        log.warning("%s: an interrupted update never replaced the attribution; its running "
                    "state %s is removed", attribution_path, pending.name)
        pending.unlink(missing_ok=True)  # (another rank may have settled it)


def _walk_new_rows(model: nn.Module, old: Attribution, source: SampleSource, walks: int,
                   seed: int, batch_size: int, engine: str, device: str | torch.device,
                   antithetic: bool, control_variate: str | None, quiet: bool,
                   edges: list[int] | None = None
                   ) -> tuple[Accumulator, torch.Tensor | None]:
    """Credits of ``walks`` walks over the new rows, with the OLD codebook as placeholder
    (binned with ``edges`` when the old run kept bins)."""
    dev = torch.device(device)
    was_training = model.training
    model.to(dev).eval()
    try:
        imputer = PlaceholderImputer(model, old.codebook.to(dev))
        # the precision the old run used ("auto" chose it from the device and its data)
        dtype = str(old.settings.get("dtype_used") or old.settings.get("dtype", "fp32"))
        eng = make_engine(engine, imputer, dtype=dtype,
                          max_rows=2048 if dev.type == "cpu" else 131072)
        n, d = old.shape
        acc = Accumulator(n * d, dev)
        if edges:
            acc.binned = BinnedCredits(n * d, imputer.num_players, device=dev, edges=edges)
        offset, surrogate = None, None
        if control_variate:
            points = points_of(control_variate)
            offset = surrogate_mean(imputer, source, batch_size=batch_size, points=points,
                                    quiet=quiet)
            surrogate = functools.partial(path_credits, imputer, points=points)
        config = StreamConfig(seed=seed, batch_size=batch_size, antithetic=antithetic,
                              quiet=quiet, surrogate=surrogate)
        run_stream(eng, source, acc, cursor=0, rule=StopRule(tolerance=None, max_samples=walks),
                   config=config, embed_dim=d, ctx=DistContext.current())
        return acc, offset
    finally:
        model.train(was_training)


def merge_decayed(old: Accumulator, new: Accumulator, gamma: float,
                  new_offset: torch.Tensor | None = None) -> Accumulator:
    """``gamma * old + new`` (sums, squared sums, counts; offsets weighted by counts).

    gamma = 1 is :meth:`Accumulator.merge`. The count is a float once a decay made it
    fractional.
    """
    if (old.offset is None) != (new_offset is None):
        raise AttributionError("cannot merge a state with a control variate and one without")
    merged = Accumulator(old.sum.numel(), old.sum.device)
    merged.sum = old.sum * gamma + new.sum.to(old.sum.device)
    merged.sumsq = old.sumsq * gamma + new.sumsq.to(old.sum.device)
    count = gamma * old.count + new.count
    merged.count = int(count) if float(count).is_integer() else count
    if (old.binned is None) != (new.binned is None):
        raise AttributionError("cannot merge a state with bins and one without")
    if old.binned is not None and new.binned is not None:
        merged.binned = BinnedCredits(old.sum.numel(), old.binned.players,
                                      device=old.sum.device, edges=old.binned.edges)
        merged.binned.sums = old.binned.sums * gamma + new.binned.sums.to(old.sum.device)
    if old.offset is not None and new_offset is not None:
        weight_old = gamma * old.count / max(count, 1e-300)
        merged.offset = old.offset * weight_old + new_offset.to(old.sum.device) * (1 - weight_old)
    return merged
