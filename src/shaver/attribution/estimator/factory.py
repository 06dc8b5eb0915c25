"""Build an engine by name: the reference loop or the fast engine."""

from __future__ import annotations

from shaver.attribution.estimator.common import ENGINES, Engine
from shaver.attribution.estimator.fast import FastEngine
from shaver.attribution.estimator.reference import ReferenceEngine
from shaver.attribution.imputer import PlaceholderImputer
from shaver.errors import AttributionError


def make_engine(name: str, imputer: PlaceholderImputer, *, dtype: str = "fp32",
                max_rows: int = 32768) -> Engine:
    """Build the ``"fast"`` or ``"reference"`` engine over ``imputer``."""
    if name == "reference":  # the authors' loop: "auto" means its own fp32
        return ReferenceEngine(imputer, dtype="fp32" if dtype == "auto" else dtype)
    if name == "fast":
        return FastEngine(imputer, dtype=dtype, max_rows=max_rows)
    raise AttributionError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")
