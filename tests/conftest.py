"""Test-suite settings.

Property tests explore new examples on every local run; in CI (``CI=true``) hypothesis is
derandomised so a submission's result does not depend on the draw.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.load_profile("ci")
