"""``runtime.precision: auto``: bf16-mixed only where the device runs bf16 natively, fp32 elsewhere.

Native bf16 means a CUDA GPU that supports it, or a CPU with AVX512_BF16 or AMX (read from the CPU's
flags at run time). Elsewhere bf16 matmuls are emulated: on a 2-core AMD EPYC with AVX2 and no AVX-512,
a bf16 matmul ran at 0.3 GFLOP/s against 65 in fp32, and a training step 14.6x slower (issue 13), so an
explicit bf16 request there warns once.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch

from recsys.config import RuntimeConfig
from recsys.training.runtime import resolve_device

__all__ = ["BF16_CPU_FLAGS", "cpu_flags", "native_bf16", "resolve_precision"]

BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""/proc/cpuinfo flags of CPUs that run bf16 matmuls natively."""

_warned: set[str] = set()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read.

    The probe the precision choice depends on: tests replace it to play another CPU.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: str) -> bool:
    """Whether ``device`` (``cpu``, ``cuda``, ``mps``) runs bf16 matmuls natively."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device == "cpu":
        return bool(BF16_CPU_FLAGS & cpu_flags())
    return False


def resolve_precision(runtime: RuntimeConfig) -> str:
    """The Lightning precision for ``runtime``: ``auto`` becomes ``bf16-mixed`` or ``32``; explicit values
    pass through, and ``bf16-mixed`` on a CPU without native bf16 warns (once per process)."""
    device = resolve_device(runtime)
    if runtime.precision == "auto":
        return "bf16-mixed" if native_bf16(device) else "32"
    emulated = runtime.precision.startswith("bf16") and device == "cpu" and not native_bf16("cpu")
    if emulated and "cpu-bf16" not in _warned:
        _warned.add("cpu-bf16")
        warnings.warn(
            f"runtime.precision={runtime.precision} on a CPU without native bf16 (no AVX512_BF16 or "
            "AMX): bf16 matmuls are emulated there, about 100x slower than fp32 (a training step "
            "~15x slower). Use runtime.precision: auto (fp32 on this CPU).",
            UserWarning,
            stacklevel=2,
        )
    return runtime.precision
