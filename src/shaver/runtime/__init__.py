"""Torch-free runtime for shaver artifacts: ``load_artifact(path).predict(ids)``.

Needs numpy only; ``import shaver.runtime`` never imports torch.
"""

from __future__ import annotations

from shaver.runtime.model import Artifact, load_artifact

__all__ = ["Artifact", "load_artifact"]
