"""The torch device and thread count that scoring outside Lightning (evaluation, similar items) uses."""

from __future__ import annotations

import torch

from recsys.config import RecsysConfig

__all__ = ["apply_threads", "resolve_device"]


def resolve_device(cfg: RecsysConfig) -> str:
    """The torch device for ``cfg.train.accelerator``: cuda when asked (or ``auto`` and present), else cpu."""
    accelerator = cfg.train.accelerator.lower()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    if accelerator == "mps":
        return "mps"
    return "cpu"


def apply_threads(cfg: RecsysConfig) -> None:
    """Set torch's intra-op thread count when the config names one (null leaves torch's default)."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
