"""Counter-based randomness: a uniform number per (seed, file, line), whatever the order
or the process that draws it (splits stay the same with any number of workers)."""

from __future__ import annotations

import numpy as np


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def line_uniforms(seed: int, file_index: int, lines: np.ndarray) -> np.ndarray:
    """float64 (rows,) in [0, 1): one draw per data line of input file ``file_index``."""
    key = mix64(np.array([(seed * 1_000_003 + file_index) & 0xFFFFFFFFFFFFFFFF],
                         dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        h = mix64(lines.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key)
    return (h >> np.uint64(11)).astype(np.float64) / 2.0**53
