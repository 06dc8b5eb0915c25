"""The fleet's manifest (``DIR/manifest.json``) and the checks that let a rerun skip classes.

An entry is reused when the manifest was written for the same source (model fingerprint and
the attribution's sha256 over phi and codebook), its class spec is unchanged and every file
it lists still has its recorded sha256. The manifest is always written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shaver.deploy.fleet_spec import DeviceClass
from shaver.fileio import write_text_atomic

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "shaver-fleet-manifest"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scores_sha(values: np.ndarray, codebook: torch.Tensor) -> str:
    """Hex SHA-256 identifying the ranking source: the scores and the placeholder codebook."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    digest.update(codebook.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def read_manifest(out: Path, ident: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Entries of an earlier manifest of the same source, by class name ({} otherwise)."""
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s: unreadable, every class is rebuilt", path)
        return {}
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT \
            or doc.get("source", {}).get("attribution_sha256") != ident["attribution_sha256"] \
            or doc.get("source", {}).get("model_fingerprint") != ident["model_fingerprint"]:
        return {}
    return {e["name"]: e for e in doc.get("classes", []) if isinstance(e, dict) and "name" in e}


def still_valid(out: Path, entry: dict[str, Any], cls: DeviceClass) -> bool:
    """Whether an earlier entry serves ``cls`` as it is (same spec, files intact)."""
    if entry.get("class") != cls.to_json():
        return False
    if entry.get("status") == "unmet":
        return True
    for item in entry.get("files", []):
        path = out / str(item.get("file", ""))
        if not path.is_file() or file_sha256(path) != item.get("sha256"):
            return False
    return bool(entry.get("files"))


def write_manifest(out: Path, ident: dict[str, Any], entries: list[dict[str, Any]],
                    seconds: float | None = None) -> None:
    """Write the manifest atomically (``seconds``: the run's time, once it is complete)."""
    doc: dict[str, Any] = {"format": MANIFEST_FORMAT, "format_version": 1, "source": ident,
                           "classes": entries}
    if seconds is not None:
        doc["seconds"] = seconds
    write_text_atomic(out / MANIFEST, json.dumps(doc, indent=2, sort_keys=True) + "\n")
