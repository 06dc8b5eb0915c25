"""What a benchmark ran on: library versions, CPU, threads, accelerator."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from shaver import __version__


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def collect_environment(**extra: Any) -> dict[str, Any]:
    """A flat JSON-able dict describing this machine and software (``extra`` merged in)."""
    env: dict[str, Any] = {
        "shaver": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    for dist in ("numpy", "torch", "scikit-learn", "matplotlib", "safetensors", "onnxruntime"):
        env[dist] = _version(dist)
    if "torch" in sys.modules:  # only describe torch when the caller already uses it
        torch = sys.modules["torch"]
        env["torch_threads"] = torch.get_num_threads()
        env["cuda"] = (
            torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
        )
    env.update(extra)
    return env
