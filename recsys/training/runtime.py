"""The ``runtime`` section applied: the torch device and thread count, and the world size of a run."""

from __future__ import annotations

import torch

from recsys.config import RuntimeConfig

__all__ = ["apply_threads", "resolve_device", "world_size"]


def resolve_device(runtime: RuntimeConfig) -> str:
    """The torch device for ``runtime.accelerator``: cuda when asked (or ``auto`` and present), else cpu."""
    accelerator = runtime.accelerator.lower()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    if accelerator == "mps":
        return "mps"
    return "cpu"


def apply_threads(runtime: RuntimeConfig) -> None:
    """Set torch's intra-op thread count when ``runtime.threads`` names one (null leaves the default)."""
    if runtime.threads:
        torch.set_num_threads(runtime.threads)


def world_size(runtime: RuntimeConfig) -> int:
    """Processes a Lightning run with these settings starts (devices x nodes under a multi-process
    strategy; one otherwise)."""
    devices = runtime.devices
    n = devices if isinstance(devices, int) and devices > 0 else 1
    return n * runtime.num_nodes if runtime.strategy not in ("auto", "single_device") or n > 1 else 1
