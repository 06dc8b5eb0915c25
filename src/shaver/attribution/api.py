"""``attribute(model, dataset)``: the Shapley value of every embedding entry (METHOD.md 2-4)."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shaver.attribution.accumulator import Accumulator, SurrogateSample
from shaver.attribution.batches import game_batch
from shaver.attribution.binned import DEFAULT_BINS, BinnedCredits, bin_edges
from shaver.attribution.codebook import field_codebook, zero_codebook
from shaver.attribution.distributed import DistContext, rank_device
from shaver.attribution.estimator.common import DTYPES, ENGINES
from shaver.attribution.estimator.factory import make_engine
from shaver.attribution.estimator.hardware import cpu_summary
from shaver.attribution.evidence import RowEvidence, field_hits
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import real_first, sample_permutations
from shaver.attribution.result import PLACEHOLDERS, Attribution
from shaver.attribution.runner import StopRule, StreamConfig, run_stream
from shaver.attribution.sampling import DEFAULT_DATA, SampleSource
from shaver.attribution.stopping import (
    DEFAULT_MIN_PASSES,
    DEFAULT_STOP_BUDGETS,
    DEFAULT_STOP_DRAWS,
    DEFAULT_STOP_FRACTION,
    CutStability,
    check_stop_options,
)
from shaver.attribution.surrogate import (
    DEFAULT_POINTS,
    DEFAULT_SURROGATE_ROWS,
    control_variate_mode,
    path_credits,
    surrogate_mean,
    surrogate_setting,
)
from shaver.data.store import PreparedDataset, open_dataset
from shaver.errors import AttributionError, FingerprintMismatch
from shaver.models.base import check_model_interface
from shaver.train.checkpoint import model_fingerprint
from shaver.train.device import pick_device
from shaver.train.evaluation import check_fits

log = logging.getLogger(__name__)


def _check_options(placeholder: str, dtype: str, engine: str, tolerance: float | None,
                   max_samples: int | None, batch_size: int, bins: int | None = None) -> None:
    for what, value, allowed in (("placeholder", placeholder, PLACEHOLDERS),
                                 ("dtype", dtype, DTYPES), ("engine", engine, ENGINES)):
        if value not in allowed:
            raise AttributionError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    if tolerance is not None and tolerance <= 0:
        raise AttributionError(f"tolerance must be > 0 (or None), got {tolerance}")
    if max_samples is not None and max_samples < 1:
        raise AttributionError(f"max_samples must be >= 1 (or None), got {max_samples}")
    if batch_size < 1:
        raise AttributionError(f"batch_size must be >= 1, got {batch_size}")
    if bins is not None and bins < 0:
        raise AttributionError(f"bins must be >= 0 (0: no bins), got {bins}")


def check_model_dataset(model: nn.Module, dataset: PreparedDataset) -> None:
    """Raise :class:`FingerprintMismatch` when ``model`` was not built for ``dataset``."""
    carried = getattr(model, "dataset_fingerprint", None)
    if carried and carried != dataset.fingerprint:
        raise FingerprintMismatch(
            f"{dataset.path}: dataset fingerprint {dataset.fingerprint}, but the model was "
            f"trained on a dataset with fingerprint {carried}")
    if list(model.field_dims) != dataset.field_dims:
        raise FingerprintMismatch(
            f"{dataset.path}: field_dims {dataset.field_dims} do not match the model's "
            f"{list(model.field_dims)} (model and data from different datasets)")
    check_fits(model, dataset)  # the same fields: the same list fields too


def attribute(
    model: nn.Module,
    dataset: PreparedDataset | str | os.PathLike[str],
    *,
    placeholder: str = "codebook",
    data: str = DEFAULT_DATA,
    tolerance: float | None = 0.01,
    max_samples: int | None = None,
    max_seconds: float | None = None,
    batch_size: int = 1024,
    antithetic: bool = False,
    control_variate: bool | str = "sampled",
    surrogate_rows: float = DEFAULT_SURROGATE_ROWS,
    surrogate_points: int = DEFAULT_POINTS,
    dtype: str = "auto",
    engine: str = "fast",
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    quiet: bool = False,
    checkpoint_every_s: float = 60.0,
    max_rows: int | None = None,
    stop: str = "cut",
    stop_budgets: Sequence[float] = DEFAULT_STOP_BUDGETS,
    stop_fraction: float = DEFAULT_STOP_FRACTION,
    stop_draws: int = DEFAULT_STOP_DRAWS,
    min_passes: float | None = None,
    codebook: torch.Tensor | None = None,
    bins: int | None = None,
) -> Attribution:
    """Shapley value of every entry of ``model.embedding.weight`` (n, d) on ``dataset``.

    One random permutation per sample over its m*d active entries (METHOD.md section 3);
    removed entries take ``placeholder`` ("codebook": frequency-weighted per-field mean over
    ``data``; "zero"). ``data``: splits, optionally ":FRACTION" or ":COUNT" (see
    :mod:`shaver.attribution.sampling`; default "train", so that the default cut can choose
    on an unseen validation split; the paper's D is "train+val"). Stops, after
    ``min_passes`` passes over the data (default None: 0 for "cut", whose errors count the
    rows not yet walked, :mod:`shaver.attribution.evidence`; 1 for "sage"), by ``stop`` (see
    :mod:`shaver.attribution.stopping`): "cut" (default) once the cut at every sparsity of ``stop_budgets`` is stable (sampling noise, simulated with
    ``stop_draws`` draws, could cost less than ``stop_fraction`` of the |phi| it keeps); "sage" (the
    paper's rule) once max(stderr) / (max(phi) - min(phi)) < ``tolerance``; or at
    ``max_samples`` / ``max_seconds``. ``engine="reference"`` is the authors' step-by-step loop; "fast" gives the
    same credits faster. ``antithetic`` averages each permutation with its reverse;
    ``control_variate`` subtracts from each walk's credits a surrogate (integrated gradients
    along the path to the placeholders) whose mean over D is added back: still unbiased,
    less variance (see :mod:`shaver.attribution.surrogate`); "exact" (or True) computes that
    mean in one pass over D before the walks, "sampled" estimates it on a uniform sample of
    ``surrogate_rows`` rows per walked sample that grows with the walks (no up-front pass;
    its error is in the standard errors; the default), False / "off": none (the paper's
    estimator); ``surrogate_points``: the surrogate's quadrature points along the path;
    ``dtype`` "bf16" runs dense layers in bfloat16, "int8" (CPU, models with a fast path) the MLP layers
    as int8 GEMMs, only if its credits agree with fp32's on the first batch; both approximate
    fp32's credits; "auto" (default) takes the fastest precision the device has natively (int8
    on CPUs with VNNI / AMX-INT8, bf16 on GPUs and on bf16 CPUs without them, else int8 on
    CPUs; :func:`~shaver.attribution.estimator.hardware.precision_order`) where its credits agree with
    fp32's, else fp32 (``dtype_used`` in the result; the reference engine runs fp32);
    ``max_rows`` caps the head rows of one fast-engine pass (default 2048 on CPU, where
    cache-sized passes win; 131072 on GPU). ``codebook`` (m, d): use this placeholder
    instead of computing it from ``data`` (e.g. to play the game of an earlier attribution,
    see :mod:`shaver.attribution.update`).
    ``bins`` (default min(8, m*d); 0: none) also keeps the credits per bin of the coalition's
    kept fraction, from the same walks, for budget-aware scores
    (:mod:`shaver.attribution.binned`, :mod:`shaver.attribution.semivalue`); more bins than
    m*d walk positions is an error.
    ``checkpoint_path`` saves the running state (every ``checkpoint_every_s`` and at the
    end); ``resume`` continues from it. Under
    torch.distributed each rank takes a shard; every rank returns the merged result.
    """
    check_model_interface(model)
    _check_options(placeholder, dtype, engine, tolerance, max_samples, batch_size, bins)
    check_stop_options(stop, tolerance, stop_budgets, stop_fraction, stop_draws)
    if min_passes is None:
        min_passes = DEFAULT_MIN_PASSES[stop]
    if not min_passes >= 0:
        raise AttributionError(f"min_passes must be >= 0, got {min_passes!r}")
    cv_mode = control_variate_mode(control_variate)
    if cv_mode != "off" and (isinstance(surrogate_points, bool)
                             or not isinstance(surrogate_points, int) or surrogate_points < 1):
        raise AttributionError(f"surrogate_points must be an integer >= 1, got "
                               f"{surrogate_points!r}")
    if cv_mode == "sampled" and not surrogate_rows >= 1:
        raise AttributionError(f"surrogate_rows must be >= 1 (S holds every walked row), got "
                               f"{surrogate_rows!r}")
    if not isinstance(dataset, PreparedDataset):
        dataset = open_dataset(dataset)
    check_model_dataset(model, dataset)
    ctx = DistContext.current()
    dev = rank_device(pick_device(device))
    source = SampleSource(dataset, data, seed=seed)
    was_training = model.training
    model.to(dev).eval()
    try:
        weight = model.embedding.weight.detach()
        m, d = dataset.num_fields, int(weight.shape[1])
        frequencies = source.frequencies() if placeholder == "codebook" or stop == "cut" else None
        if codebook is not None:
            book = codebook.detach().to(weight.device, torch.float32)
            if tuple(book.shape) != (m, d):
                raise AttributionError(f"codebook must be ({m}, {d}), got {tuple(book.shape)}")
        else:
            book = (field_codebook(weight, dataset.field_dims, frequencies)
                    if placeholder == "codebook" else zero_codebook(m, d))
        fingerprint = model_fingerprint(model)
        settings = {"format": 1, "placeholder": placeholder, "data": data, "seed": int(seed),
                    "antithetic": bool(antithetic), "dtype": dtype,
                    "model_fingerprint": fingerprint, "dataset_fingerprint": dataset.fingerprint}
        if cv_mode != "off":  # only when on: states of runs without it keep their hash
            settings["control_variate"] = surrogate_setting(cv_mode, surrogate_points,
                                                            surrogate_rows)
        imputer = PlaceholderImputer(model, book)
        players = imputer.num_players  # slots * d (m * d without bags)
        if bins is None:
            bins = min(DEFAULT_BINS, players)
        edges = bin_edges(players, bins) if bins else None  # checks bins <= players first
        if edges:  # only when on, as above
            settings["bins"] = edges
        rows = max_rows or (2048 if dev.type == "cpu" else 131072)
        eng = make_engine(engine, imputer, dtype=dtype, max_rows=rows)
        _settle_precision(eng, source, seed, dev)
        acc, cursor = _initial_state(weight.shape[0] * d, dev, checkpoint_path, resume, settings)
        if edges and acc.binned is None:
            acc.binned = BinnedCredits(acc.sum.numel(), players, device=dev, edges=edges)
        cut = None  # built before any walk, so a rule that cannot fire is said at once
        if stop == "cut":
            evidence = RowEvidence(dataset.field_dims, frequencies, source.size, d, dev,
                                   hits=field_hits(dataset.layout, dataset.field_dims,
                                                   frequencies, source.size))
            cut = CutStability(weight.shape[0] * d, stop_budgets, fraction=stop_fraction,
                               draws=stop_draws, error=evidence.stderr)
        surrogate = None
        if cv_mode == "exact" and acc.offset is None:
            acc.offset = surrogate_mean(imputer, source, batch_size=batch_size,
                                        points=surrogate_points, ctx=ctx, quiet=quiet)
        if cv_mode == "sampled" and acc.cv is None:
            acc.cv = SurrogateSample(acc.sum.numel(), source.size, dev)
        if cv_mode != "off":
            surrogate = functools.partial(path_credits, imputer, points=surrogate_points)
        rule = StopRule(tolerance=tolerance, max_samples=max_samples, max_seconds=max_seconds,
                        min_passes=min_passes, cut=cut)
        config = StreamConfig(seed=seed, batch_size=batch_size, antithetic=antithetic,
                              checkpoint_path=Path(checkpoint_path) if checkpoint_path else None,
                              checkpoint_every_s=checkpoint_every_s, settings=settings,
                              quiet=quiet, surrogate=surrogate,
                              surrogate_rows=surrogate_rows if cv_mode == "sampled" else None)
        began = time.monotonic()
        cursor, reason = run_stream(eng, source, acc, cursor=cursor, rule=rule, config=config,
                                    embed_dim=d, ctx=ctx)
        info: dict[str, Any] = {
            **settings, "engine": engine, "path": getattr(eng, "path_name", engine),
            "tolerance": tolerance, "max_samples": max_samples, "max_seconds": max_seconds,
            "stop": stop, "min_passes": min_passes,
            "stop_cut": None if cut is None else {
                "budgets": [float(s) for s in stop_budgets], "fraction": stop_fraction,
                "draws": stop_draws, **(cut.last.to_json() if cut.last else {})},
            "batch_size": batch_size, "dtype_used": getattr(eng, "dtype_used", dtype),
            "int8_agreement": getattr(eng, "int8_agreement", None),
            "dtype_agreement": getattr(eng, "agreement", {}), "cpu": cpu_summary(),
            "stop_reason": reason,
            "surrogate_rows_seen": None if acc.cv is None else acc.cv.count,
            "convergence_ratio": acc.convergence_ratio(), "passes": cursor / source.size,
            "data_rows": source.size, "dataset_path": str(Path(dataset.path).resolve()),
            "seconds": time.monotonic() - began, "world_size": ctx.world}
        n = weight.shape[0]
        return Attribution(phi=acc.phi().view(n, d).float(), stderr=acc.stderr().view(n, d).float(),
                           count=acc.count, codebook=book, placeholder=placeholder,
                           settings=info, model_fingerprint=fingerprint,
                           dataset_fingerprint=dataset.fingerprint,
                           field_dims=dataset.field_dims,
                           bins=None if acc.binned is None else
                           acc.binned.shares(acc.count, acc.surrogate_mean()).view(-1, n, d),
                           bin_edges=[] if acc.binned is None else acc.binned.edges)
    finally:
        model.train(was_training)


def _settle_precision(eng, source: SampleSource, seed: int, device: torch.device) -> None:
    """Let the engine check its fast path and choose its precision on the stream's first
    samples, the same on every rank (a choice made on each rank's own first batch could
    differ between ranks)."""
    imputer = eng.imputer
    x, y, w = game_batch(source, 0, min(16, source.size), device)
    perm = sample_permutations(seed, 0, len(x), imputer.num_players, device)
    eng.losses(x, y, real_first(perm, imputer.real_players(x, w)), w)


def _initial_state(entries: int, device: torch.device, checkpoint_path, resume: bool,
                   settings: dict[str, Any]) -> tuple[Accumulator, int]:
    if not resume:
        return Accumulator(entries, device), 0
    if checkpoint_path is None:
        raise AttributionError("resume=True needs a checkpoint_path to resume from")
    if not Path(checkpoint_path).is_file():
        log.info("no resume state at %s: starting from scratch", checkpoint_path)
        return Accumulator(entries, device), 0
    acc, cursor = Accumulator.load(checkpoint_path, settings=settings, device=device)
    if acc.sum.numel() != entries:
        raise AttributionError(f"{checkpoint_path}: resume state has {acc.sum.numel()} entries, "
                               f"the model has {entries}")
    log.info("resuming from %s at sample %d", checkpoint_path, cursor)
    return acc, cursor
