"""The fleet file: device classes, each with a whole-artifact byte budget and its precisions.

    classes:
      - name: phone-low
        bytes: 2MiB          # whole artifact (shaver.table.budget.parse_bytes units)
        values: int8         # kept embedding values: fp32 | fp16 | int8 | int4 | int2
        head: int8           # dense head + first-order weights: fp32 | fp16 | int8
        format: both         # shaver | onnx | both (default shaver)
        finetune_epochs: 2   # optional: fine-tune the class's plan, at most this many epochs

``finetune_epochs`` fine-tunes the chosen plan quantisation-aware on the run's dataset
(:func:`shaver.pruning.api.finetune_cut`: same plan and bytes, the plan as chosen kept when
no epoch beats it on validation); the manifest records it in the class and the row.

``values`` and ``head`` restrict the chooser to those precisions; a class that leaves one out
lets the chooser pick it (every value dtype, mixed tiers included; every head precision).

Everything is checked before any work: an unknown key, a missing name or budget, a budget
that is not a positive byte size, an unknown dtype or format, or a duplicate class name
raises :class:`FleetError` naming the file, the class and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from shaver.data.spec_checks import yaml_error
from shaver.errors import BudgetError, ShaverError, shown
from shaver.fileio import load_yaml
from shaver.runtime.headq import HEAD_DTYPES
from shaver.runtime.lowbit import TIER_DTYPES
from shaver.table.budget import Budget

#: Embedding value dtypes a class may ask for: those of the plan's tiers.
FLEET_VALUE_DTYPES: tuple[str, ...] = TIER_DTYPES
FORMATS = ("shaver", "onnx", "both")
CLASS_KEYS = ("name", "bytes", "values", "head", "format", "finetune_epochs")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class FleetError(ShaverError):
    """A fleet file or fleet run that cannot be used."""


@dataclass(frozen=True)
class DeviceClass:
    """One device class: ``name``, ``bytes`` (whole-artifact budget), ``values`` and ``head``
    dtypes (None: the chooser picks), ``format`` (shaver | onnx | both), ``finetune_epochs``
    (None: single-shot)."""

    name: str
    bytes: int
    values: str | None = None
    head: str | None = None
    format: str = "shaver"
    finetune_epochs: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The class as the manifest records it (``finetune_epochs`` only when asked for, so
        the entries of single-shot classes written before it stay valid)."""
        out = asdict(self)
        if self.finetune_epochs is None:
            del out["finetune_epochs"]
        return out

    @property
    def budget(self) -> Budget:
        return Budget.bytes_(self.bytes)


def load_fleet(path: str | os.PathLike[str]) -> list[DeviceClass]:
    """Read and validate a fleet YAML file (one safe loader: :func:`shaver.fileio.load_yaml`
    refuses alias expansion out of proportion to the text)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetError(f"{path}: cannot read the fleet file ({exc.strerror})") from exc
    try:
        doc = load_yaml(text, path, FleetError)
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc, FleetError) from None
    return parse_fleet(doc, str(path))


def parse_fleet(doc: Any, where: str = "<fleet>") -> list[DeviceClass]:
    """Validate a fleet document (``{"classes": [...]}``) -> device classes, in file order."""
    if not isinstance(doc, Mapping) or "classes" not in doc:
        raise FleetError(f"{where}: expected a mapping with a 'classes:' list")
    unknown = sorted(str(k) for k in doc if k != "classes")
    if unknown:
        raise FleetError(f"{where}: unknown key {shown(unknown[0])} (expected only 'classes')")
    items = doc["classes"]
    if not isinstance(items, list) or not items:
        raise FleetError(f"{where}: 'classes' must be a non-empty list of device classes")
    classes: list[DeviceClass] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        cls = _parse_class(item, f"{where}: classes[{i}]")
        if cls.name in seen:
            raise FleetError(f"{where}: classes[{i}]: duplicate class name {shown(cls.name)}")
        seen.add(cls.name)
        classes.append(cls)
    return classes


def _parse_class(item: Any, where: str) -> DeviceClass:
    if not isinstance(item, Mapping):
        raise FleetError(f"{where}: a class must be a mapping with keys {', '.join(CLASS_KEYS)}")
    for key in item:
        if key not in CLASS_KEYS:
            raise FleetError(f"{where}: unknown key {shown(key)} (expected {', '.join(CLASS_KEYS)})")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise FleetError(f"{where}: name must be a string of letters, digits, '.', '_' or '-' "
                         f"(it names the artifact file), got {shown(name)}")
    where = f"{where} ({name})"
    if "bytes" not in item:
        raise FleetError(f"{where}: missing key 'bytes' (the whole-artifact budget, e.g. 2MiB)")
    raw = item["bytes"]
    try:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise BudgetError(f"expected a byte size such as 2MiB or 500000, got {shown(raw)}")
        budget = Budget.bytes_(raw)
    except BudgetError as exc:
        raise FleetError(f"{where}: bytes: {exc}") from None
    fields = {"values": (FLEET_VALUE_DTYPES, None), "head": (HEAD_DTYPES, None),
              "format": (FORMATS, "shaver")}
    chosen = {}
    for key, (allowed, default) in fields.items():
        value = item.get(key, default)
        if value is not default and value not in allowed:
            raise FleetError(f"{where}: {key} must be one of {', '.join(allowed)}, got {shown(value)}")
        chosen[key] = value
    epochs = item.get("finetune_epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                               or epochs < 1):
        raise FleetError(f"{where}: finetune_epochs must be a positive integer, got "
                         f"{shown(epochs)}")
    return DeviceClass(name=name, bytes=int(budget.value), finetune_epochs=epochs, **chosen)
