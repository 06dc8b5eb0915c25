"""What this device offers for low-precision GEMMs, and what ``dtype="auto"`` tries first.

Machines differ: some CPUs have AVX2 only, others AVX-512 BF16 or AMX (bf16 and int8 tile
units), where bf16 GEMMs run several times faster than fp32; GPUs run bf16 natively. The
choice is made from the device's features (not from a timing), so the same machine, data and
seed always give the same precision and the same result: int8 first where the CPU has int8
dot-product units (VNNI, AMX-INT8), else bf16 where native, else int8. Each candidate is then used only
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


#: CPU features with int8 dot-product units (VNNI, AMX tiles): where one is present, the
#: int8 path outruns bf16 even on CPUs that also have AVX-512 BF16. Measured on an AMD
#: EPYC with AVX-512 BF16 + VNNI, Criteo-shaped DeepFM, plain walks, same run: fp32 474,
#: bf16 1,277, int8 1,590 samples/s (issue 23).
INT8_UNITS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def precision_order(device_type: str, flags: frozenset[str] | set[str], *, bf16: bool,
                    int8: bool) -> list[str]:
    """Low precisions ``dtype="auto"`` tries, best first, from the device's features only
    (a pure function: the same features always give the same order). ``bf16``: bf16 runs
    natively here; ``int8``: the int8 path can run (CPU quantized engine, a model with an
    int8 fast path). On a CPU with int8 dot-product units (:data:`INT8_UNITS`) int8 comes
    first; without them bf16 does where native (AMX-BF16 / AVX-512 BF16 alone), then int8
    (on AVX2 only it still beats fp32 on the MLP layers). GPUs: bf16."""
    order = ["bf16"] if bf16 else []
    if int8 and device_type == "cpu":
        order = ["int8", *order] if set(flags) & INT8_UNITS else [*order, "int8"]
    return order


def auto_candidates(device: torch.device, has_int8_path: bool) -> list[str]:
    """Precisions ``dtype="auto"`` tries on ``device``, best first (fp32 is always the
    fallback): :func:`precision_order` of this machine's features."""
    return precision_order(device.type, cpu_flags() if device.type == "cpu" else frozenset(),
                           bf16=bf16_native(device),
                           int8=has_int8_path and int8_available(device))
