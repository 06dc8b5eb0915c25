"""A refreshed model (fine-tuned, same vocabulary) reuses the previous model's attribution as
a control variate whose bias is removed.

For the new model's Shapley values on D, each walk (a row of D and a permutation) is run
through BOTH models, each with its own placeholder (the old attribution's codebook for the
old model, the new model's for the new one), and only the difference of their credits is
averaged::

    phi_new = mean over walks of (credit_new - credit_old) + phi_old_hat

``phi_old_hat`` (the previous attribution) is an unbiased estimate of the old model's phi
and its walks are independent of the new ones, so phi_new is unbiased for the NEW model,
with variance ``Var(credit_new - credit_old) / walks + stderr_old^2``. When fine-tuning
moved the model a little, the difference varies much less than the credits themselves
(bench/attribution/bench_refresh.py measures the ratio rho), so a few walks suffice; each
walk costs two model evaluations. Break-even: reuse wins at equal cost when
``2 * rho * Var_new / cost + stderr_old^2 < Var_new / cost``; it cannot get below the old
attribution's own standard error, so it pays for a well-converged previous attribution.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from shaver.attribution.accumulator import Accumulator
from shaver.attribution.batches import game_batch
from shaver.attribution.codebook import field_codebook, zero_codebook
from shaver.attribution.estimator.common import global_entries
from shaver.attribution.estimator.factory import make_engine
from shaver.attribution.imputer import PlaceholderImputer
from shaver.attribution.permutations import sample_permutations
from shaver.attribution.result import Attribution
from shaver.attribution.runner import batch_credits
from shaver.attribution.sampling import SampleSource
from shaver.data.store import PreparedDataset
from shaver.errors import AttributionError, FingerprintMismatch
from shaver.progress import progress_bar
from shaver.train.checkpoint import model_fingerprint


def refresh_attribution(new_model: nn.Module, old_model: nn.Module, old: Attribution,
                        dataset: PreparedDataset, *, samples: int, seed: int | None = None,
                        batch_size: int = 1024, engine: str = "fast",
                        device: str | torch.device = "cpu", quiet: bool = True
                        ) -> Attribution:
    """The new model's attribution from ``samples`` paired walks plus ``old`` (the old
    model's attribution on the same data D; see the module docstring). ``seed``: of the
    walks (default: the old attribution's plus one); it must differ from the old one, or
    the walks would repeat the old attribution's and the two would not be independent."""
    found = model_fingerprint(old_model)
    if old.model_fingerprint != found:
        raise FingerprintMismatch(f"{old.path or 'the attribution'}: computed for model "
                                  f"{old.model_fingerprint}, but the previous model passed has "
                                  f"fingerprint {found}")
    if old.dataset_fingerprint != dataset.fingerprint:
        raise FingerprintMismatch(f"the attribution was computed on a dataset with fingerprint "
                                  f"{old.dataset_fingerprint}, but {dataset.path} has "
                                  f"fingerprint {dataset.fingerprint}")
    if list(new_model.field_dims) != list(old.field_dims or new_model.field_dims):
        raise AttributionError("the refreshed model has another vocabulary (field sizes)")
    if samples < 1:
        raise AttributionError(f"samples must be >= 1, got {samples}")
    old_seed = int(old.settings.get("seed", 0))
    seed = old_seed + 1 if seed is None else int(seed)
    if seed == old_seed:
        raise AttributionError(f"seed {seed} is the old attribution's: its walks would repeat "
                               f"(pass another seed)")
    dev = torch.device(device)
    source = SampleSource(dataset, str(old.settings.get("data", "train+val")), seed=seed)
    began = time.monotonic()
    acc, _, book = paired_walks(new_model, old_model, old, source, samples, seed, batch_size,
                                engine, dev, quiet)
    n, d = old.shape
    phi = acc.phi().view(n, d).cpu() + old.phi.double()
    stderr = (acc.stderr().view(n, d).cpu() ** 2 + old.stderr.double() ** 2).sqrt()
    info: dict[str, Any] = {**old.settings, "refreshed_from": old.model_fingerprint,
                            "refresh_samples": samples, "refresh_seconds":
                            time.monotonic() - began, "model_fingerprint":
                            model_fingerprint(new_model)}
    return Attribution(phi=phi, stderr=stderr, count=samples, codebook=book,
                       placeholder=old.placeholder, settings=info,
                       model_fingerprint=info["model_fingerprint"],
                       dataset_fingerprint=old.dataset_fingerprint, field_dims=old.field_dims)


def paired_walks(new_model: nn.Module, old_model: nn.Module, old: Attribution,
                 source: SampleSource, samples: int, seed: int, batch_size: int, engine: str,
                 device: torch.device, quiet: bool
                 ) -> tuple[Accumulator, Accumulator, torch.Tensor]:
    """(credit_new - credit_old, credit_new alone) accumulated over ``samples`` walks shared
    by both models, and the new model's codebook."""
    models = (new_model, old_model)
    states = [m.training for m in models]
    try:
        for m in models:
            m.to(device).eval()
        weight = new_model.embedding.weight.detach()
        m_fields, d = len(new_model.field_dims), int(weight.shape[1])
        book = (field_codebook(weight, source.dataset.field_dims, source.frequencies())
                if old.placeholder == "codebook" else zero_codebook(m_fields, d))
        rows = 2048 if device.type == "cpu" else 131072
        imputer = PlaceholderImputer(new_model, book)
        eng_new = make_engine(engine, imputer, max_rows=rows)
        eng_old = make_engine(engine, PlaceholderImputer(old_model, old.codebook.to(device)),
                              max_rows=rows)
        acc = Accumulator(weight.shape[0] * d, device)
        alone = Accumulator(weight.shape[0] * d, device)
        antithetic = bool(old.settings.get("antithetic", False))
        with progress_bar(total=samples, desc="refresh", unit="sample", disable=quiet) as bar:
            for lo in range(0, samples, batch_size):
                hi = min(lo + batch_size, samples)
                x, y, w = game_batch(source, lo, hi, device)
                perm = sample_permutations(seed, lo, hi - lo, imputer.num_players, device)
                credits = batch_credits(eng_new, x, y, perm, antithetic, w)[0].double()
                diff = credits - batch_credits(eng_old, x, y, perm, antithetic, w)[0].double()
                if not bool(torch.isfinite(diff).all()):
                    raise AttributionError(f"non-finite credits on samples {lo}..{hi - 1}")
                entries = global_entries(x, d)
                acc.add(entries, diff)
                alone.add(entries, credits)
                bar.update(hi - lo)
        return acc, alone, book.detach().cpu()
    finally:
        for m, was in zip(models, states):
            m.train(was)


def variance_ratio(acc_diff: Accumulator, acc_new: Accumulator) -> dict[str, float]:
    """How much less the paired difference varies than the new credits alone, per walk:
    ``sum of per-entry variances`` ratio and the median per-entry ratio."""
    def var(acc: Accumulator) -> torch.Tensor:
        n = max(acc.count, 1)
        mean = acc.sum / n
        return (acc.sumsq / n - mean * mean).clamp_min(0)
    v_diff, v_new = var(acc_diff), var(acc_new)
    live = v_new > 0
    ratio = (v_diff[live] / v_new[live]) if bool(live.any()) else torch.zeros(1)
    total = float(v_diff.sum() / v_new.sum()) if float(v_new.sum()) > 0 else math.nan
    return {"total": total, "median": float(ratio.median())}
