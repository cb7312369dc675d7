"""``--resume`` safety: the checkpoint must exist and must come from the same model, objective and data.

Every checkpoint ``fit`` writes carries, through the :class:`ResumeRecord` callback's state, the settings
that shape the model and its training (:data:`SHAPING_KEYS`: the ``model``, ``masking`` and ``loss``
sections, the optimiser, schedule, seed, batch and validation sample) as flat dotted keys, their
fingerprint, and the data fingerprint. :func:`check_resume` compares them with the config and the dataset
of the run about to resume, and refuses with a :class:`ResumeError` naming every differing key; it also
refuses when there is no ``last.ckpt`` instead of silently training from scratch. Settings that only say
how long or where to train (``train.max_epochs``, ``patience``, ``max_time_minutes``, ``runtime``,
``eval``, ``tracking``...) may change between the two runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch

from recsys.config import ConfigError, RecsysConfig, flatten

__all__ = [
    "SHAPING_KEYS",
    "ResumeError",
    "ResumeRecord",
    "check_resume",
    "checkpoint_callback_state",
    "shaping_config",
]

log = logging.getLogger("recsys.train")

SHAPING_KEYS = (
    "model.",
    "masking.",
    "loss.",
    "train.optimizer.",
    "train.schedule.",
    "train.seed",
    "train.batch_size",
    "train.bucket_by_length",
    "train.ema_decay",
    "train.val_users",
    "train.validation_holdout",
)
"""Dotted keys (a trailing dot: the whole section) that a resumed run must share with its checkpoint."""


_AUTO = json.dumps("auto")


class ResumeError(ConfigError):
    """``--resume`` cannot continue: no checkpoint, or one written with other model or data settings."""


def shaping_config(cfg: RecsysConfig) -> dict[str, str]:
    """The :data:`SHAPING_KEYS` of ``cfg`` as flat dotted keys with JSON-encoded values."""
    return {
        key: json.dumps(value, sort_keys=True)
        for key, value in flatten(cfg).items()
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in SHAPING_KEYS)
    }


def _fingerprint(shaping: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()


class ResumeRecord(L.Callback):
    """Stores the shaping config, its fingerprint and the data fingerprint in every checkpoint."""

    def __init__(self, cfg: RecsysConfig, data_fingerprint: str) -> None:
        self.shaping = shaping_config(cfg)
        self.data_fingerprint = data_fingerprint

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.shaping,
            "config_fingerprint": _fingerprint(self.shaping),
            "data_fingerprint": self.data_fingerprint,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: :func:`check_resume` has compared the record before training started."""


def checkpoint_callback_state(checkpoint: Path, name: str) -> dict[str, Any] | None:
    """The saved state of the callback class ``name`` in a Lightning checkpoint (None if absent).

    The checkpoint is memory-mapped, so only the small callback states are actually read.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    found = state.get("callbacks", {}).get(name)
    return dict(found) if isinstance(found, dict) else None


def _describe(keys: list[str], saved: dict[str, str], now: dict[str, str]) -> str:
    shown = [f"{k}: {saved.get(k, '(absent)')} -> {now.get(k, '(absent)')}" for k in keys[:8]]
    more = f" (and {len(keys) - 8} more)" if len(keys) > 8 else ""
    return "; ".join(shown) + more


def check_resume(cfg: RecsysConfig, checkpoint: Path, data_fingerprint: str | None = None) -> None:
    """Refuse to resume from ``checkpoint`` when it is missing or was written with other settings.

    Args:
        cfg: the config of the run about to resume.
        checkpoint: ``<train.output_dir>/checkpoints/last.ckpt``.
        data_fingerprint: the dataset's fingerprint, compared too when given.

    Raises:
        ResumeError: naming the missing file, or every differing key with both values.
    """
    if not checkpoint.is_file():
        raise ResumeError(
            f"--resume: no checkpoint to resume from at {checkpoint} (train.output_dir="
            f"{cfg.train.output_dir}); run without --resume to train from scratch"
        )
    try:
        record = checkpoint_callback_state(checkpoint, ResumeRecord.__qualname__)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ResumeError(f"--resume: cannot read the checkpoint {checkpoint}: {exc}") from None
    if record is None:
        log.warning("%s predates resume checks: its settings cannot be compared with this config", checkpoint)
        return
    saved: dict[str, str] = dict(record.get("config", {}))
    now = shaping_config(cfg)
    # An `auto` setting is only known once resolved against the data: fit compares it then (the
    # checkpoint holds resolved values), so the job's early check leaves it out.
    differing = sorted(
        k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k) and now.get(k) != _AUTO
    )
    if differing:
        raise ResumeError(
            f"--resume: {checkpoint} was trained with other settings than this config: "
            f"{_describe(differing, saved, now)}; resume with the checkpoint's settings, or train "
            "into another train.output_dir"
        )
    saved_data = record.get("data_fingerprint")
    if data_fingerprint is not None and saved_data and saved_data != data_fingerprint:
        raise ResumeError(
            f"--resume: {checkpoint} was trained on other data (fingerprint {str(saved_data)[:12]}..., "
            f"the prepared dataset now has {data_fingerprint[:12]}...); resume on the same data, or train "
            "into another train.output_dir"
        )
