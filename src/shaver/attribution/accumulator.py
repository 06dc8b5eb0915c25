"""Running sums of per-sample credits: phi, standard errors, stopping rule, save/resume/merge.

State: ``sum`` and ``sumsq`` float64 (n*d,) of credits per global entry, ``count`` = samples
seen (ALL samples, so entries a sample does not touch count as 0 for it). Merging two runs is
adding their states. With a control variate (:mod:`shaver.attribution.surrogate`) the sums
are of credit - surrogate and the surrogate's mean over D is added to phi: either ``offset``,
its exact mean (one pass over D before the walks), or ``cv``, a :class:`SurrogateSample` (its
running mean over a uniform prefix S of D that grows with the walks; its sampling error is
added to the standard errors). A checkpoint also stores the stream cursor (next global sample
index), the offset or the surrogate sample, and a hash of the settings it was computed with;
resuming with other settings is refused.
``binned`` (optional, :mod:`shaver.attribution.binned`) keeps the same credits per bin of the
coalition's kept fraction; it is merged, reset, saved and resumed with the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from shaver.attribution.binned import BinnedCredits
from shaver.attribution.estimator.common import real_entries
from shaver.errors import AttributionError
from shaver.fileio import read_tensors

STATE_FORMAT = "shaver-attribution-state"


class SurrogateSample:
    """Running sums of the control variate's surrogate over S, the first ``count`` rows of
    the stream's first pass (a uniform random sample of the ``size`` rows of D).

    ``mean()`` is unbiased for the surrogate's mean over D; ``variance_of_mean()`` is its
    sampling variance, with the finite-population factor (1 - count/size): 0 once S is D.
    """

    def __init__(self, num_entries: int, size: int, device: torch.device | str = "cpu"):
        self.sum = torch.zeros(int(num_entries), dtype=torch.float64, device=device)
        self.sumsq = torch.zeros_like(self.sum)
        self.count = 0
        self.size = int(size)

    @property
    def complete(self) -> bool:
        return self.count >= self.size

    def add(self, entries: torch.Tensor, values: torch.Tensor) -> None:
        """entries (B, P) global flat indices (-1: a pad, skipped), values (B, P): surrogate
        credits of B rows."""
        flat, vals = real_entries(entries, values.to(torch.float64))
        self.sum.index_add_(0, flat, vals)
        self.sumsq.index_add_(0, flat, vals * vals)
        self.count += int(values.shape[0])

    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    def variance_of_mean(self) -> torch.Tensor:
        n = max(self.count, 1)
        mean = self.sum / n
        spread = (self.sumsq / n - mean * mean).clamp_min(0)
        return spread / n * max(0.0, 1.0 - self.count / max(self.size, 1))

    def merge(self, other: SurrogateSample) -> None:
        self.sum += other.sum.to(self.sum.device)
        self.sumsq += other.sumsq.to(self.sum.device)
        self.count += other.count

    def reset(self) -> None:
        self.sum.zero_()
        self.sumsq.zero_()
        self.count = 0


def settings_hash(settings: dict[str, Any]) -> str:
    """16 hex chars identifying the settings that change the credits."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class Accumulator:
    """Sums of credits over global entries (n*d of them) and the number of samples seen."""

    def __init__(self, num_entries: int, device: torch.device | str = "cpu"):
        self.sum = torch.zeros(int(num_entries), dtype=torch.float64, device=device)
        self.sumsq = torch.zeros_like(self.sum)
        self.count = 0
        self.offset: torch.Tensor | None = None  # float64 (n*d,): added to phi (control variate)
        self.cv: SurrogateSample | None = None  # or the surrogate's mean from a sample of D
        self.binned: BinnedCredits | None = None  # credits per bin of the kept fraction

    def add(self, entries: torch.Tensor, credits: torch.Tensor) -> None:
        """entries LongTensor (B, P) global flat indices (-1: a pad's player, skipped),
        credits (B, P): one row per sample.

        A sample touches each global entry at most once (its fields are distinct, and a bag's
        later copies of a repeated id have no entry: :mod:`shaver.attribution.slots`).
        """
        flat, values = real_entries(entries, credits.to(torch.float64))
        self.sum.index_add_(0, flat, values)
        self.sumsq.index_add_(0, flat, values * values)
        self.count += int(credits.shape[0])

    def merge(self, other: Accumulator) -> Accumulator:
        """Add ``other``'s state into this one (in place); returns self."""
        if other.sum.shape != self.sum.shape:
            raise AttributionError(
                f"cannot merge accumulators of {other.sum.numel()} and {self.sum.numel()} entries")
        self.sum += other.sum.to(self.sum.device)
        self.sumsq += other.sumsq.to(self.sum.device)
        self.count += other.count
        if self.binned is not None:
            self.binned.merge(other.binned)
        if self.cv is not None and other.cv is not None:
            self.cv.merge(other.cv)
        return self

    def reset(self) -> None:
        self.sum.zero_()
        self.sumsq.zero_()
        self.count = 0
        if self.binned is not None:
            self.binned.reset()
        if self.cv is not None:
            self.cv.reset()

    def surrogate_mean(self) -> torch.Tensor | None:
        """The control variate's mean added to phi: the exact ``offset``, the sampled
        ``cv.mean()``, or None without a control variate."""
        if self.offset is not None:
            return self.offset
        return None if self.cv is None else self.cv.mean()

    def phi(self) -> torch.Tensor:
        """float64 (n*d,): mean credit per sample seen (0 before any sample), plus the
        surrogate's mean (:meth:`surrogate_mean`)."""
        mean = self.sum / max(self.count, 1)
        offset = self.surrogate_mean()
        return mean if offset is None else mean + offset

    def stderr(self) -> torch.Tensor:
        """float64 (n*d,): sqrt((sumsq/count - mean^2) / count), mean = sum/count, plus (in
        variance) the sampling error of a sampled surrogate mean; an exact ``offset`` adds
        none. (With S and the walked rows nested, the covariance of the two means is left
        out: it is of order Cov(s, c - s) / |S|, and negative where s tracks c.)"""
        n = max(self.count, 1)
        mean = self.sum / n
        var = (self.sumsq / n - mean * mean).clamp_min(0) / n
        if self.offset is None and self.cv is not None:
            var = var + self.cv.variance_of_mean()
        return var.sqrt()

    def convergence_ratio(self) -> float:
        """SAGE's max(stderr) / (max(phi) - min(phi)); inf before any sample."""
        if self.count == 0:
            return float("inf")
        phi = self.phi()
        gap = max(float(phi.max() - phi.min()), 1e-12)
        return float(self.stderr().max()) / gap

    # -- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, cursor: int, settings: dict[str, Any]) -> None:
        """Write the state, the cursor and the settings (hash) atomically to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": STATE_FORMAT, "count": str(self.count), "cursor": str(int(cursor)),
                "settings": json.dumps(settings, sort_keys=True),
                "settings_hash": settings_hash(settings)}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            tensors = {"sum": self.sum.cpu(), "sumsq": self.sumsq.cpu()}
            if self.offset is not None:
                tensors["offset"] = self.offset.cpu()
            if self.cv is not None:
                tensors["cv_sum"], tensors["cv_sumsq"] = self.cv.sum.cpu(), self.cv.sumsq.cpu()
                meta["cv_count"], meta["cv_size"] = str(self.cv.count), str(self.cv.size)
            if self.binned is not None:
                tensors["bins"] = self.binned.sums.cpu()
                meta["bin_edges"] = json.dumps(self.binned.edges)
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, settings: dict[str, Any],
             device: torch.device | str = "cpu") -> tuple[Accumulator, int]:
        """Read a state written by :meth:`save` -> (accumulator, cursor).

        Raises :class:`AttributionError` if the file is unreadable or was written with other
        settings (the message names the settings that differ).
        """
        path = Path(path)
        tensors, meta = read_tensors(path, AttributionError, "cannot read the resume state")
        if meta.get("format") != STATE_FORMAT or "sum" not in tensors or "sumsq" not in tensors:
            raise AttributionError(f"{path}: not a shaver attribution state file")
        if meta.get("settings_hash") != settings_hash(settings):
            theirs = json.loads(meta.get("settings", "{}"))
            diff = sorted(k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k))
            raise AttributionError(
                f"{path}: resume state was computed with other settings (differs in: "
                f"{', '.join(diff) or 'unknown'}); remove it or run without --resume")
        acc = cls(tensors["sum"].numel(), device)
        acc.sum.copy_(tensors["sum"])
        acc.sumsq.copy_(tensors["sumsq"])
        if "offset" in tensors:
            acc.offset = tensors["offset"].to(device=acc.sum.device, dtype=torch.float64)
        if "cv_sum" in tensors and "cv_sumsq" in tensors:
            acc.cv = SurrogateSample(acc.sum.numel(), int(meta.get("cv_size", 0)), device)
            acc.cv.sum.copy_(tensors["cv_sum"])
            acc.cv.sumsq.copy_(tensors["cv_sumsq"])
            acc.cv.count = int(meta.get("cv_count", 0))
        count = float(meta["count"])  # a decayed update (shaver.attribution.update) is fractional
        acc.count = int(count) if count.is_integer() else count
        if "bins" in tensors and "bin_edges" in meta:
            edges = json.loads(meta["bin_edges"])
            acc.binned = BinnedCredits(acc.sum.numel(), edges[-1] - 1, device=device,
                                       edges=edges)
            acc.binned.sums.copy_(tensors["bins"])
        return acc, int(meta["cursor"])
