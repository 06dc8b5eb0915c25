"""Built-in dataset specs (YAML files in ``shaver/data/presets/``)."""

from __future__ import annotations

from pathlib import Path

from shaver.data.spec import DatasetSpec
from shaver.errors import SpecError

PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    """Names of the built-in presets, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> DatasetSpec:
    """The validated spec of a built-in preset (``criteo``, ``avazu``, ``kdd12``,
    ``movielens-100k``)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SpecError(f"unknown preset {name!r}: expected one of {', '.join(preset_names())}")
    return DatasetSpec.load(path)
