"""The result of an attribution: Shapley value of every embedding entry, with its provenance.

File format (safetensors, written atomically)::

    tensors   phi (n, d) float32, stderr (n, d) float32, codebook (m, d) float32,
              optional bins (B, n, d) float32
    metadata  format="shaver-attribution", format_version="2", and JSON strings:
              count, placeholder, settings, model_fingerprint, dataset_fingerprint, field_dims,
              bin_edges (only with bins); checksum = "sha256:<hex>" of every tensor and every
              other metadata value (see :func:`checksum`)

Version 2 added the optional bins (each bin's share of phi, :mod:`shaver.attribution.binned`);
version 1 files (no bins) still load, with ``bins=None``. The checksum came later, without a
version change (readers ignore metadata they do not know): it is verified on load, and a
file without one (written by an older shaver) loads unverified, with a log line saying so.

Loading never unpickles; a missing, truncated, foreign or corrupted file (a flipped bit in
any tensor or metadata value) raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from shaver.errors import CheckpointError
from shaver.fileio import atomic_path, read_tensors

log = logging.getLogger(__name__)

FORMAT = "shaver-attribution"
FORMAT_VERSION = 2
READABLE_VERSIONS = ("1", "2")
PLACEHOLDERS = ("codebook", "zero")
_META_KEYS = ("count", "placeholder", "settings", "model_fingerprint", "dataset_fingerprint",
              "field_dims")
CHECKSUM_KEY = "checksum"


def checksum(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> str:
    """``"sha256:<hex>"`` of the tensors (name, dtype, shape, bytes; by name) and the metadata
    (key and value, by key; the checksum itself left out)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
    for key in sorted(k for k in meta if k != CHECKSUM_KEY):
        digest.update(json.dumps([key, meta[key]]).encode())
    return "sha256:" + digest.hexdigest()


@dataclass
class Attribution:
    """Shapley values of the n x d embedding entries of one model on one dataset.

    phi: float32 (n, d), mean loss increase when the entry is replaced by its placeholder
    (> 0: useful entry); stderr: float32 (n, d) standard error of phi; count: samples seen;
    codebook: float32 (m, d) per-field placeholder (zeros for ``placeholder="zero"``);
    path: the file :meth:`load` read (None for a computed result; not saved);
    bins: float32 (B, n, d) or None, bin b's share of phi (they sum to phi) over walk steps
    whose coalition keeps c in [bin_edges[b], bin_edges[b+1]) of the m*d active entries.
    """

    phi: torch.Tensor
    stderr: torch.Tensor
    count: int
    codebook: torch.Tensor
    placeholder: str
    settings: dict[str, Any] = field(default_factory=dict)
    model_fingerprint: str = ""
    dataset_fingerprint: str = ""
    field_dims: list[int] = field(default_factory=list)
    bins: torch.Tensor | None = None
    bin_edges: list[int] = field(default_factory=list)
    #: The file it was loaded from (None when computed), for messages; never saved.
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.phi = self.phi.detach().to("cpu", torch.float32).contiguous()
        self.stderr = self.stderr.detach().to("cpu", torch.float32).contiguous()
        self.codebook = self.codebook.detach().to("cpu", torch.float32).contiguous()
        self.count = int(self.count)
        self.field_dims = [int(v) for v in self.field_dims]
        if self.placeholder not in PLACEHOLDERS:
            raise CheckpointError(
                f"placeholder must be one of {', '.join(PLACEHOLDERS)}, got {self.placeholder!r}")
        if self.phi.dim() != 2 or self.stderr.shape != self.phi.shape:
            raise CheckpointError(
                f"phi and stderr must be (n, d) of one shape, got {tuple(self.phi.shape)} and "
                f"{tuple(self.stderr.shape)}")
        if self.codebook.dim() != 2 or self.codebook.shape[1] != self.phi.shape[1]:
            raise CheckpointError(
                f"codebook must be (fields, {self.phi.shape[1]}), got {tuple(self.codebook.shape)}")
        if self.field_dims and (sum(self.field_dims) != self.phi.shape[0]
                                or len(self.field_dims) != self.codebook.shape[0]):
            raise CheckpointError(
                f"field_dims {self.field_dims} do not match phi rows {self.phi.shape[0]} and "
                f"codebook fields {self.codebook.shape[0]}")
        self._check_bins()

    def _check_bins(self) -> None:
        self.bin_edges = [int(e) for e in self.bin_edges]
        if self.bins is None:
            if self.bin_edges:
                raise CheckpointError("bin_edges given without bins")
            return
        self.bins = self.bins.detach().to("cpu", torch.float32).contiguous()
        if self.bins.dim() != 3 or tuple(self.bins.shape[1:]) != tuple(self.phi.shape) \
                or len(self.bin_edges) != self.bins.shape[0] + 1:
            raise CheckpointError(
                f"bins must be (B, {self.phi.shape[0]}, {self.phi.shape[1]}) with B + 1 "
                f"bin_edges, got {tuple(self.bins.shape)} and {len(self.bin_edges)} edges")

    @property
    def shape(self) -> tuple[int, int]:
        """(n, d) of the embedding table."""
        return (int(self.phi.shape[0]), int(self.phi.shape[1]))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the result to ``path`` (safetensors) atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
        for key in _META_KEYS:
            meta[key] = json.dumps(getattr(self, key), sort_keys=True)
        tensors = {"phi": self.phi, "stderr": self.stderr, "codebook": self.codebook}
        if self.bins is not None:
            tensors["bins"] = self.bins
            meta["bin_edges"] = json.dumps(self.bin_edges)
        meta[CHECKSUM_KEY] = checksum(tensors, meta)
        if path.is_dir():
            raise CheckpointError(f"{path}: is a directory; name the attribution file to write")
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Attribution:
        """Read a file written by :meth:`save`; :class:`CheckpointError` on a bad file."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: attribution file not found")
        tensors, meta = read_tensors(path, CheckpointError)
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("format_version") not in READABLE_VERSIONS:
            raise CheckpointError(f"{path}: format_version {meta.get('format_version')!r} is not "
                                  f"supported (this shaver reads "
                                  f"{', '.join(READABLE_VERSIONS)})")
        _verify(path, tensors, meta)
        missing = [k for k in ("phi", "stderr", "codebook") if k not in tensors]
        missing += [k for k in _META_KEYS if k not in meta]
        if missing:
            raise CheckpointError(f"{path}: missing {', '.join(missing)}")
        try:
            fields = {k: json.loads(meta[k]) for k in _META_KEYS}
            if "bins" in tensors:
                fields["bin_edges"] = json.loads(meta.get("bin_edges", "[]"))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: corrupt metadata ({exc})") from exc
        return cls(phi=tensors["phi"], stderr=tensors["stderr"], codebook=tensors["codebook"],
                   bins=tensors.get("bins"), path=path, **fields)

    def __repr__(self) -> str:
        n, d = self.shape
        return (f"Attribution(entries={n}x{d}, count={self.count}, placeholder={self.placeholder!r}, "
                f"model={self.model_fingerprint!r}, dataset={self.dataset_fingerprint!r})")


def _verify(path: Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> None:
    stored = meta.get(CHECKSUM_KEY)
    if stored is None:
        log.info("%s: no checksum (written before shaver stored one): loaded unverified", path)
        return
    if stored != checksum(tensors, meta):
        raise CheckpointError(f"{path}: checksum mismatch: the attribution file is corrupted "
                              f"(recompute it with shaver attribute)")
