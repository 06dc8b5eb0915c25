"""Error types. Every user-facing failure raises a subclass of :class:`ShaverError`.

The CLI turns a ``ShaverError`` into ``error: <message>`` on stderr and exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ShaverError(Exception):
    """Base class of every error shaver raises on bad input or bad state."""


class DataError(ShaverError):
    """Raw or prepared data is missing, malformed or inconsistent (names file and line)."""


class SpecError(ShaverError):
    """A dataset spec (YAML) or preset is invalid."""


class ModelError(ShaverError):
    """A model is unknown, misconfigured, or lacks the shaver model interface."""


class CheckpointError(ShaverError):
    """A checkpoint, run directory or result file cannot be read or does not match."""


class FingerprintMismatch(CheckpointError):
    """Two artefacts (data, model, attribution, artifact) come from different origins."""


class TrainingError(ShaverError):
    """Training cannot go on (for example the loss became NaN)."""


class AttributionError(ShaverError):
    """Attribution settings or state are invalid (bad resume file, NaN losses, ...)."""


class BudgetError(ShaverError):
    """A pruning budget is out of range, malformed, or below the artifact's fixed cost."""


class ArtifactError(ShaverError):
    """A deployment artifact is truncated, corrupted, or of an unsupported version."""
