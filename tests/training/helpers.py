"""Tiny datasets with a known answer, and the one seeded CPU training config the tests share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.config import RecsysConfig, load_config
from recsys.data.pipeline import prepare
from recsys.data.prepared import PreparedDataset


def planted_rule_log(
    path: Path, *, n_users: int = 200, n_items: int = 40, length: int = 12, seed: int = 0
) -> Path:
    """Users walk the cycle 1 → 2 → … → n_items → 1 from a random start: the next item is determined.

    A model that learns the rule ranks the true next item first (HR@1 = 1); popularity cannot.
    """
    rng = np.random.default_rng(seed)
    lines = ["user_id,item_id,timestamp"]
    for u in range(n_users):
        start = int(rng.integers(n_items))
        for t in range(length):
            lines.append(f"u{u},{(start + t) % n_items + 1},{1_600_000_000 + t * 60}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_config(tmp: Path, source: Path, **overrides: object) -> RecsysConfig:
    """Small, fast, seeded CPU config; ``overrides`` are dotted keys."""
    sets = {
        "data.source.path": str(source),
        "data.output_dir": str(tmp / "prepared"),
        "model.hidden_size": 32,
        "model.n_layers": 1,
        "model.n_heads": 2,
        "model.max_len": 16,
        "model.dropout": 0.0,
        "model.attention_dropout": 0.0,
        "masking.mask_prob": 0.3,
        "masking.last_item_prob": 0.3,
        "train.batch_size": 32,
        "train.max_epochs": 25,
        "train.optimizer.lr": 0.01,
        # The schedule these tests were written for (the library default is a warmed-up cosine).
        "train.schedule.kind": "constant",
        "train.schedule.warmup_steps": 0,
        "masking.window": "recent",
        "train.val_users": "null",  # every user validated, every validation event held out
        "train.validation_holdout": "all",
        "train.patience": 30,
        "runtime.progress_bar": False,
        "train.output_dir": str(tmp / "run"),
        "runtime.threads": 1,
        "runtime.precision": "32",  # the same numbers on every CPU (auto would pick bf16 on some)
        "tracking.enabled": False,
    }
    sets.update({k: v for k, v in overrides.items()})
    return load_config(None, [f"{k}={v}" for k, v in sets.items()])


def prepared(cfg: RecsysConfig) -> PreparedDataset:
    return PreparedDataset.load(prepare(cfg.data, plot=False).path)
