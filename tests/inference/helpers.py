"""Tiny prepared datasets and model bundles for the inference and evaluate/recommend tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recsys.config import RecsysConfig
from recsys.data.prepared import PreparedDataset
from recsys.model.bert4rec import BERT4Rec
from tests.training.helpers import planted_rule_log, prepared, tiny_config


@dataclass
class Setup:
    """A prepared planted-rule dataset, its config and a model bundle trained (or not) on it."""

    cfg: RecsysConfig
    dataset: PreparedDataset
    bundle: Path
    root: Path

    def overrides(self) -> list[str]:
        """``--set`` arguments reproducing ``cfg``'s data and train locations for the CLI."""
        return [
            "--set",
            f"data.source.path={self.cfg.data.source.path}",
            "--set",
            f"data.output_dir={self.cfg.data.output_dir}",
            "--set",
            f"train.output_dir={self.cfg.train.output_dir}",
            "--set",
            "tracking.enabled=false",
            "--set",
            "runtime.progress_bar=false",
        ]


def untrained_setup(
    root: Path, *, n_users: int = 60, n_items: int = 30, seed: int = 0, **overrides: object
) -> Setup:
    """Prepared dataset + a bundle of a randomly initialised model (no training: fast)."""
    from recsys.data.fingerprint import dataset_fingerprint
    from recsys.training.bundle import save_bundle

    root.mkdir(parents=True, exist_ok=True)
    source = planted_rule_log(root / "log.csv", n_users=n_users, n_items=n_items)
    cfg = tiny_config(root, source, **overrides)
    dataset = prepared(cfg)
    torch.manual_seed(seed)
    model = BERT4Rec(dataset.n_items, cfg.model).eval()
    bundle = save_bundle(
        root / "run" / "model",
        model,
        cfg,
        dataset.users,
        dataset.items,
        dataset.item_counts(),
        data_fingerprint=dataset_fingerprint(dataset),
    )
    return Setup(cfg, dataset, bundle, root)


_TRAINED: dict[str, Setup] = {}


def trained_setup(root: Path) -> Setup:
    """A model trained on the planted rule (a few seconds); cached for the test session."""
    if "trained" not in _TRAINED:
        from recsys.training.fit import fit

        source = planted_rule_log(root / "log.csv", n_users=120)
        cfg = tiny_config(root, source, **{"train.max_epochs": 12})
        dataset = prepared(cfg)
        result = fit(cfg, dataset)
        assert result.bundle_path is not None
        _TRAINED["trained"] = Setup(cfg, dataset, result.bundle_path, root)
    return _TRAINED["trained"]


def read_parts(out: Path) -> pl.DataFrame:
    """Every part of an output directory, sorted for comparison."""
    from recsys.inference.writer import read_output

    frame = read_output(out)
    first = frame.columns[0]
    return frame.sort([first, "rank"])


def random_histories(
    rng: np.random.Generator, n_users: int, n_items: int, low: int, high: int
) -> list[list[int]]:
    """Histories of random lengths in [low, high] over items 1..n_items (repeats allowed)."""
    return [list(rng.integers(1, n_items + 1, int(rng.integers(low, high + 1)))) for _ in range(n_users)]
