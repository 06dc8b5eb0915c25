"""Running sums of per-sample credits: phi, standard errors, stopping rule, save/resume/merge.

State: ``sum`` and ``sumsq`` float64 (n*d,) of credits per global entry, ``count`` = samples
seen (ALL samples, so entries a sample does not touch count as 0 for it). Merging two runs is
adding their states. With a control variate (:mod:`shaver.attribution.surrogate`) the sums
are of credit - surrogate and ``offset`` holds the surrogate's exact mean over D, added to
phi. A checkpoint also stores the stream cursor (next global sample index), the offset, and a
hash of the settings it was computed with; resuming with other settings is refused.
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
from shaver.errors import AttributionError
from shaver.fileio import read_tensors

STATE_FORMAT = "shaver-attribution-state"


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
        self.binned: BinnedCredits | None = None  # credits per bin of the kept fraction

    def add(self, entries: torch.Tensor, credits: torch.Tensor) -> None:
        """entries LongTensor (B, P) global flat indices, credits (B, P): one row per sample.

        A sample touches each global entry at most once (its fields are distinct).
        """
        flat = entries.reshape(-1)
        values = credits.reshape(-1).to(torch.float64)
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
        return self

    def reset(self) -> None:
        self.sum.zero_()
        self.sumsq.zero_()
        self.count = 0
        if self.binned is not None:
            self.binned.reset()

    def phi(self) -> torch.Tensor:
        """float64 (n*d,): mean credit per sample seen (0 before any sample), plus ``offset``."""
        mean = self.sum / max(self.count, 1)
        return mean if self.offset is None else mean + self.offset

    def stderr(self) -> torch.Tensor:
        """float64 (n*d,): sqrt((sumsq/count - mean^2) / count), mean = sum/count (the offset,
        an exact mean, adds no error)."""
        n = max(self.count, 1)
        mean = self.sum / n
        return ((self.sumsq / n - mean * mean).clamp_min(0) / n).sqrt()

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
        count = float(meta["count"])  # a decayed update (shaver.attribution.update) is fractional
        acc.count = int(count) if count.is_integer() else count
        if "bins" in tensors and "bin_edges" in meta:
            edges = json.loads(meta["bin_edges"])
            acc.binned = BinnedCredits(acc.sum.numel(), edges[-1] - 1, device=device,
                                       edges=edges)
            acc.binned.sums.copy_(tensors["bins"])
        return acc, int(meta["cursor"])
