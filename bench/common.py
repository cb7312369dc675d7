"""Helpers shared by the benchmarks: where the data is, peak memory, matmul throughput, output."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


GIB_BYTES = 2**30


def shared_data() -> Path:
    """``../shared/data`` beside the project root, or ``$RECSYS_SHARED_DATA``."""
    env = os.environ.get("RECSYS_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_flops(threads: int | None = None, n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul FLOP/s of this machine (best of ``repeats``), the roofline we compare to."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def emit(name: str, rows: list[tuple[str, str]], payload: dict[str, Any]) -> None:
    """Print a small table and one JSON line (``BENCH {...}``) for scripts."""
    width = max(len(k) for k, _ in rows)
    print(f"\n== {name} ==")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print("BENCH " + json.dumps({"bench": name, **payload}), flush=True)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def native_bf16() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512_BF16 or AMX-BF16 in /proc/cpuinfo flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False
