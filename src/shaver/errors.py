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



#: The most characters of a user's value that an error message echoes.
ECHO_LIMIT = 80
#: The most characters of a listing (a file's column names, say) that a message echoes.
LIST_LIMIT = 300


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for an error message, cut after ``limit`` characters (then ``...``).

    A message names the offending value but never echoes more than a line of it: a value
    built by YAML aliases or read from a huge file would otherwise fill the terminal (and
    memory, to build the message). Nested lists, tuples and dicts are rendered only as far
    as the limit needs.
    """
    return clipped(_repr_prefix(value, limit + 1), limit)


def clipped(text: str, limit: int = LIST_LIMIT) -> str:
    """``text`` (a listing of names from a user's file) cut after ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


def _repr_prefix(value: object, budget: int) -> str:
    """``repr(value)``, or a prefix of it at least ``budget`` characters long."""
    if isinstance(value, (str, bytes)):
        return repr(value[:budget])[:budget] if len(value) > budget else repr(value)
    kind = type(value)
    if kind not in (list, tuple, dict) or not value:
        return repr(value)[:budget]  # other objects have short reprs in shaver's messages
    pairs = value.items() if kind is dict else ((None, v) for v in value)  # type: ignore
    out = "{" if kind is dict else "[" if kind is list else "("
    for i, (key, item) in enumerate(pairs):
        if len(out) >= budget:
            return out
        out += ", " if i else ""
        if kind is dict:
            out += _repr_prefix(key, budget - len(out)) + ": "
        out += _repr_prefix(item, budget - len(out))
    return out + ("}" if kind is dict else "]" if kind is list else
                  ",)" if len(value) == 1 else ")")
