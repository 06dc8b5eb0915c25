"""One attribution, many devices: an artifact per device class and a manifest.

    >>> result = fleet("runs/deepfm", "runs/deepfm/attribution-codebook.safetensors",
    ...                "fleet.yaml", "out/fleet")
    >>> [c["status"] for c in result.classes]      # "written" or "unmet"

Each class (:mod:`shaver.deploy.fleet_spec`) gets the best cut for its whole-artifact byte
budget at its value and head dtypes (:func:`best_cut`, the one place that chooses it), one
artifact (and/or an ONNX graph) written atomically, and an entry in ``DIR/manifest.json``:
file (relative to DIR), bytes, sha256, method and cut, validation and test AUC / LogLoss
measured on the written artifact. A class whose budget is below its smallest artifact is
recorded as ``"unmet"`` with that smallest size; the other classes go on. The manifest is
rewritten (atomically) after every class, so an interrupted run keeps what it finished and a
rerun redoes only the classes whose entry, source (model + attribution) or files (sha256)
do not match.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from shaver import __version__
from shaver.deploy.fleet_manifest import (
    MANIFEST,
    file_sha256,
    read_manifest,
    scores_sha,
    still_valid,
    write_manifest,
)
from shaver.deploy.fleet_spec import DeviceClass, FleetError, load_fleet, parse_fleet
from shaver.errors import BudgetError
from shaver.table.size import feature_map_metadata

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutChoice:
    """The cut chosen for a class: ``method``, ``kept`` of ``total`` entries, and the exact
    size of its artifact (``predicted_bytes``)."""

    method: str
    kept: int
    total: int
    predicted_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"kept": self.kept, "total": self.total,
                "sparsity": 1 - self.kept / self.total if self.total else 0.0}


class CutSource:
    """What every class's cut is taken from: the model, its checked scores (one attribution)
    ranked once (:class:`~shaver.table.ranked.RankedCounts`), and the size metadata."""

    def __init__(self, model: nn.Module, scores: Any, size_metadata: dict[str, Any] | None,
                 order: str = "abs"):
        from shaver.table.ranked import RankedCounts

        self.model, self.scores, self.size_metadata, self.order = (model, scores, size_metadata,
                                                                    order)
        self.ranked = RankedCounts(scores.values, model.field_dims, order)
        self.total = self.ranked.total

    def size(self, kept: int, cls: DeviceClass) -> int:
        """Exact artifact bytes of the ``kept`` top-ranked entries at ``cls``'s dtypes."""
        from shaver.table.size import predict_bytes_for_counts

        return predict_bytes_for_counts(self.model, self.ranked.counts(kept),
                                        value_dtype=cls.values, head_dtype=cls.head,
                                        metadata=self.size_metadata)


def best_cut(source: CutSource, cls: DeviceClass) -> CutChoice:
    """The cut a device class gets: THE function to point at a better chooser.

    Today: the Shaver ranking of ``source`` (|phi|, the attribution's codebook), cut at the
    largest kept count whose artifact at the class's value and head dtypes fits its byte
    budget (the binary search of :func:`~shaver.table.budget.resolve_bytes`, so the same
    cut as ``shaver prune`` at that budget). Raises :class:`BudgetError` when even the
    smallest artifact does not fit.
    """
    from shaver.table.budget import resolve_bytes

    kept = resolve_bytes(cls.budget, lambda k: source.size(k, cls), lambda k: k, source.total)
    return CutChoice(f"{source.scores.scorer}/{source.order}", kept, source.total,
                     source.size(kept, cls))


def smallest_artifact(source: CutSource, cls: DeviceClass) -> int:
    """Bytes of the smallest artifact for ``cls`` (all entries pruned, or none if smaller)."""
    return min(source.size(0, cls), source.size(source.total, cls))


@dataclass
class FleetResult:
    """``classes``: the manifest entries in fleet order; ``manifest``: its path;
    ``seconds``: from the budget list to the last artifact written; ``skipped``: names of
    classes reused from an earlier run."""

    classes: list[dict[str, Any]]
    manifest: Path
    seconds: float
    skipped: list[str]


def fleet(run: str | os.PathLike[str], attribution: str | os.PathLike[str],
          fleet_file: str | os.PathLike[str] | Sequence[DeviceClass] | dict[str, Any],
          out: str | os.PathLike[str], *, dataset: str | os.PathLike[str] | None = None,
          evaluate: bool = True, quiet: bool = True) -> FleetResult:
    """Write one artifact per device class of ``fleet_file`` from a run and its attribution.

    run: a run directory (``shaver train --out``); attribution: its attribution file;
    fleet_file: a fleet YAML path, a parsed document, or DeviceClass objects; out: the
    output directory (created). ``evaluate`` measures validation and test AUC / LogLoss of
    every artifact on the run's dataset (or ``dataset``).
    """
    from shaver.attribution.result import Attribution
    from shaver.train.checkpoint import load_run, open_run_dataset

    classes = _classes(fleet_file)
    loaded = load_run(run, device="cpu")
    attr = Attribution.load(attribution)
    data = open_run_dataset(loaded, dataset) if evaluate or dataset is not None else None
    return run_fleet(loaded.model, attr, classes, out, dataset=data, evaluate=evaluate,
                     quiet=quiet, source={"run": str(run), "attribution": str(attribution)})


def _classes(spec: Any) -> list[DeviceClass]:
    if isinstance(spec, (str, os.PathLike)):
        return load_fleet(spec)
    if isinstance(spec, dict):
        return parse_fleet(spec)
    classes = list(spec)
    if not classes or not all(isinstance(c, DeviceClass) for c in classes):
        raise FleetError("expected a fleet file, a fleet document or DeviceClass objects")
    names = [c.name for c in classes]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise FleetError(f"duplicate class name {dup!r}")
    return classes


def run_fleet(model: nn.Module, attribution: Any, classes: Sequence[DeviceClass],
              out: str | os.PathLike[str], *, dataset: Any = None, evaluate: bool = True,
              quiet: bool = True, source: dict[str, Any] | None = None) -> FleetResult:
    """:func:`fleet` on a loaded model and attribution (see there)."""
    from shaver.pruning.api import as_scores

    started = time.perf_counter()
    classes = _classes(classes)
    if evaluate and dataset is None:
        raise FleetError("evaluate=True needs the dataset to measure AUC / LogLoss on")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size_meta = feature_map_metadata(dataset)
    cuts = CutSource(model, as_scores(model, attribution, dataset=dataset), size_meta)
    ident = {**(source or {}), "model_fingerprint": cuts.scores.model_fingerprint or "",
             "attribution_sha256": scores_sha(cuts.scores.values, cuts.scores.codebook)}
    previous = read_manifest(out, ident)
    entries, skipped = [], []
    pending = [c.name for c in classes]
    for cls in classes:
        old = previous.get(cls.name)
        if old is not None and still_valid(out, old, cls):
            entries.append(old)
            skipped.append(cls.name)
        else:
            entries.append(_build_class(cuts, cls, out, dataset, evaluate))
        pending.remove(cls.name)
        # earlier entries of classes not redone yet stay listed if this run is interrupted
        write_manifest(out, ident, entries + [previous[n] for n in pending if n in previous])
        if not quiet:
            print(_summary(entries[-1]) + ("  (unchanged)" if cls.name in skipped else ""))
    seconds = time.perf_counter() - started
    write_manifest(out, ident, entries, seconds)
    return FleetResult(entries, out / MANIFEST, seconds, skipped)


def _build_class(cuts: CutSource, cls: DeviceClass, out: Path, dataset: Any,
                 evaluate: bool) -> dict[str, Any]:
    from shaver.pruning.api import masked_copy

    entry: dict[str, Any] = {"name": cls.name, "class": cls.to_json()}
    try:
        cut = best_cut(cuts, cls)
    except BudgetError:
        smallest = smallest_artifact(cuts, cls)
        log.warning("class %s: budget %d bytes is below its smallest artifact (%d bytes)",
                    cls.name, cls.bytes, smallest)
        return {**entry, "status": "unmet", "smallest_bytes": smallest,
                "reason": f"budget {cls.bytes} bytes is below the smallest artifact of "
                          f"{smallest} bytes at values {cls.values}, head {cls.head}"}
    pruned = masked_copy(cuts.model, cuts.ranked.mask(cut.kept), cuts.scores.codebook)
    meta = {"budget": cls.budget.to_json(), "scorer": cuts.scores.scorer,
            "order": cuts.order, "kept": cut.kept, "total": cut.total,
            "fleet_class": cls.name, "model_fingerprint": cuts.scores.model_fingerprint,
            "library_version": __version__, **(cuts.size_metadata or {})}
    files = _write_files(pruned, cls, out, meta)
    entry.update(status="written", method=cut.method, cut=cut.to_json(), **files[0],
                 files=files, predicted_bytes=cut.predicted_bytes)
    if evaluate:
        entry["metrics"] = _artifact_metrics(out / files[0]["file"] if cls.format != "onnx"
                                             else None, pruned, cls, dataset)
    return entry


def _write_files(pruned: nn.Module, cls: DeviceClass, out: Path,
                 meta: dict[str, Any]) -> list[dict[str, Any]]:
    from shaver.deploy.artifact import export_artifact
    from shaver.deploy.onnx_export import export_onnx

    paths = []
    with tempfile.TemporaryDirectory(prefix=".fleet-", dir=out) as tmp:
        target = out / f"{cls.name}.shaver" if cls.format != "onnx" else Path(tmp) / "a.shaver"
        export_artifact(pruned, target, value_dtype=cls.values, head_dtype=cls.head,
                        metadata=meta)
        if cls.format != "onnx":
            paths.append(("shaver", target))
        if cls.format in ("onnx", "both"):
            paths.append(("onnx", export_onnx(target, out / f"{cls.name}.onnx")))
    return [{"format": fmt, "file": path.name, "bytes": path.stat().st_size,
             "sha256": file_sha256(path)} for fmt, path in paths]


def _artifact_metrics(path: Path | None, pruned: nn.Module, cls: DeviceClass,
                      dataset: Any) -> dict[str, dict[str, float]]:
    """AUC / LogLoss of the artifact as written (an ONNX-only class: of the artifact it was
    exported from, which the export checks against onnxruntime)."""
    from shaver.deploy.artifact import export_artifact
    from shaver.deploy.embedding import compressed_model
    from shaver.train.evaluation import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            path = export_artifact(pruned, Path(tmp) / "a.shaver", value_dtype=cls.values,
                                   head_dtype=cls.head, include_feature_map=False).path
        model = compressed_model(path)
    out = {}
    for split in ("val", "test"):
        got = evaluate(model, dataset, split)
        out[split] = {"auc": float(got["auc"]), "logloss": float(got["logloss"])}
    return out


def _summary(entry: dict[str, Any]) -> str:
    if entry["status"] == "unmet":
        return f"{entry['name']}: UNMET, {entry['reason']}"
    auc = entry.get("metrics", {}).get("test", {}).get("auc")
    tail = f", test AUC {auc:.4f}" if auc is not None else ""
    return (f"{entry['name']}: {entry['file']} {entry['bytes']:,} bytes "
            f"(sparsity {entry['cut']['sparsity']:.4f}){tail}")
