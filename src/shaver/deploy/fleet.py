"""One attribution, many devices: an artifact per device class and a manifest.

    >>> result = fleet("runs/deepfm", "runs/deepfm/attribution-codebook.safetensors",
    ...                "fleet.yaml", "out/fleet")
    >>> [c["status"] for c in result.classes]      # "written" or "unmet"

Each class (:mod:`shaver.deploy.fleet_spec`) is an artifact-bytes budget plus the precisions
it allows; it gets THE chooser's cut (:func:`shaver.pruning.api.cut`: the same cut, and the
same artifact byte for byte, as ``shaver prune --bytes`` with those ``--values`` / ``--head``),
one artifact (and/or an ONNX graph) written atomically, and an entry in
``DIR/manifest.json``: file (relative to DIR), bytes, sha256, the cut's results row, and
validation and test AUC / LogLoss measured on the written artifact. A class whose budget is below its smallest artifact is
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

from shaver.attribution.result import Attribution
from shaver.deploy.artifact import export_artifact
from shaver.deploy.embedding import compressed_model
from shaver.deploy.fleet_manifest import (
    MANIFEST,
    file_sha256,
    read_manifest,
    scores_sha,
    still_valid,
    write_manifest,
)
from shaver.deploy.fleet_spec import DeviceClass, FleetError, load_fleet, parse_fleet
from shaver.deploy.onnx_export import export_onnx
from shaver.errors import BudgetError
from shaver.fileio import check_output_dir, remove_stale_temps, temp_prefix
from shaver.pruning.api import PruneResult, as_scores, cut, open_chooser
from shaver.pruning.finetune import FinetuneConfig
from shaver.train.checkpoint import load_run, open_run_dataset
from shaver.train.evaluation import evaluate as evaluate_split

log = logging.getLogger(__name__)


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
    classes = _classes(fleet_file)
    check_output_dir(out, FleetError)
    loaded = load_run(run, device="cpu")
    attr = Attribution.load(attribution)
    data = open_run_dataset(loaded, dataset)
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
    started = time.perf_counter()
    classes = _classes(classes)
    if dataset is None:
        raise FleetError("a fleet chooses every class's cut on the validation split: give the "
                         "run's dataset")
    out = check_output_dir(out, FleetError)
    scores = as_scores(model, attribution, dataset=dataset)
    cuts = Cuts(model, attribution, dataset, quiet)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # what a killed run left
    ident = {**(source or {}), "model_fingerprint": scores.model_fingerprint or "",
             "attribution_sha256": scores_sha(scores.values, scores.codebook)}
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


class Cuts:
    """THE chooser of a fleet, opened once (rankings sorted, candidates' scores computed) for
    all its classes."""

    def __init__(self, model: nn.Module, attribution: Any, dataset: Any, quiet: bool):
        self.chooser, self.names = open_chooser(model, attribution, "auto", dataset=dataset,
                                                quiet=quiet)

    def cut(self, cls: DeviceClass) -> PruneResult:
        config = None if cls.finetune_epochs is None \
            else FinetuneConfig(epochs=cls.finetune_epochs)
        return cut(self.chooser, self.names, cls.budget, "auto",
                   values=None if cls.values is None else [cls.values],
                   heads=None if cls.head is None else [cls.head], finetune_config=config)


def _build_class(cuts: Cuts, cls: DeviceClass, out: Path, dataset: Any,
                 evaluate: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": cls.name, "class": cls.to_json()}
    try:
        result = cuts.cut(cls)
    except BudgetError as exc:
        log.warning("class %s: %s", cls.name, exc)
        return {**entry, "status": "unmet", "reason": str(exc)}
    files = _write_files(result, cls, out)
    entry.update(status="written", row=result.row(), **files[0], files=files,
                 predicted_bytes=result.artifact_bytes)
    if "finetune" in result.info:
        entry["finetune"] = {**result.info["finetune"],
                             "val": result.info["finetune_val"]}
    if evaluate:
        entry["metrics"] = _artifact_metrics(out / files[0]["file"] if cls.format != "onnx"
                                             else None, result, dataset)
    return entry


def _write_files(result: PruneResult, cls: DeviceClass, out: Path) -> list[dict[str, Any]]:
    paths = []
    with tempfile.TemporaryDirectory(prefix=temp_prefix("fleet"), dir=out) as tmp:
        target = out / f"{cls.name}.shaver" if cls.format != "onnx" else Path(tmp) / "a.shaver"
        export_artifact(result, target)
        if cls.format != "onnx":
            paths.append(("shaver", target))
        if cls.format in ("onnx", "both"):
            paths.append(("onnx", export_onnx(target, out / f"{cls.name}.onnx")))
    return [{"format": fmt, "file": path.name, "bytes": path.stat().st_size,
             "sha256": file_sha256(path)} for fmt, path in paths]


def _artifact_metrics(path: Path | None, result: PruneResult,
                      dataset: Any) -> dict[str, dict[str, float]]:
    """AUC / LogLoss of the artifact as written (an ONNX-only class: of the artifact it was
    exported from, which the export checks against onnxruntime)."""
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            path = export_artifact(result, Path(tmp) / "a.shaver",
                                   include_feature_map=False).path
        model = compressed_model(path)
    out = {}
    for split in ("val", "test"):
        got = evaluate_split(model, dataset, split)
        out[split] = {"auc": float(got["auc"]), "logloss": float(got["logloss"])}
    return out


def _summary(entry: dict[str, Any]) -> str:
    if entry["status"] == "unmet":
        return f"{entry['name']}: UNMET, {entry['reason']}"
    auc = entry.get("metrics", {}).get("test", {}).get("auc")
    tail = f", test AUC {auc:.4f}" if auc is not None else ""
    row = entry["row"]
    return (f"{entry['name']}: {entry['file']} {entry['bytes']:,} bytes "
            f"({row['winner']}, sparsity {row['sparsity']:.4f}){tail}")
