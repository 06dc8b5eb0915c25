"""What this device offers for low-precision GEMMs, and what ``dtype="auto"`` tries first.

Machines differ: some CPUs have AVX2 only, others AVX-512 BF16 or AMX (bf16 and int8 tile
units), where bf16 GEMMs run several times faster than fp32; GPUs run bf16 natively. The
choice is made from the device's features (not from a timing), so the same machine, data and
seed always give the same precision and the same result. Each candidate is then used only
where its credits agree with fp32's on the first batch (see the fast engine).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from shaver.attribution.estimator.mlp import int8_available


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def bf16_native(device: torch.device) -> bool:
    """True where bf16 matmuls run on hardware units: CUDA with bf16, or a CPU with AVX-512
    BF16 / AMX that oneDNN uses (elsewhere torch emulates bf16 on a CPU, slower than fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_summary() -> str:
    """One line for logs and benchmarks: torch's ISA level and the low-precision units."""
    level = torch.backends.cpu.get_cpu_capability()
    units = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni",
                                  "avx_vnni", "avx512f"})
    return f"{level}" + (f" ({', '.join(units)})" if units else " (no bf16/int8 units)")


def auto_candidates(device: torch.device, has_int8_path: bool) -> list[str]:
    """Precisions ``dtype="auto"`` tries, best first (fp32 is always the fallback):
    bf16 where it is native; int8 on CPUs with torch's quantized engine (also on AVX2 only,
    where it still beats fp32 on the MLP layers) for models with an int8 fast path."""
    out = []
    if bf16_native(device):
        out.append("bf16")
    if has_int8_path and int8_available(device):
        out.append("int8")
    return out
