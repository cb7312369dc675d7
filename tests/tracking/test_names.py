"""Names a person reads in MLflow: metric sections, run names, the logged model's name (no store needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import config_file, load_config, to_yaml
from recsys.tracking.names import epoch_metric, logged_model_name, run_name, section_metric


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("train_loss", "train/loss"),
        ("lr", "train/lr"),
        ("epoch_seconds", "system/epoch_seconds"),
        ("epoch_tokens_per_s", "system/tokens_per_s"),
        ("val_ndcg_at_10", "val/ndcg_at_10"),
        ("val_hr@10", "val/hr_at_10"),
        ("system/peak_rss_gb", "system/peak_rss_gb"),
        ("fit_mse@1", "fit_mse_at_1"),  # not a recsys key: only made MLflow-safe
    ],
)
def test_epoch_metric_sections(key: str, expected: str) -> None:
    assert epoch_metric(key) == expected


def test_section_metric() -> None:
    assert section_metric("test", "ndcg@10") == "test/ndcg_at_10"
    assert section_metric("test.most_popular", "hr@5") == "test.most_popular/hr_at_5"


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("ml-latest-small", "bert4rec-ml-latest-small"),
        ("ml-1m", "bert4rec-ml-1m"),
        ("my.data/v2: 'x'", "bert4rec-my-data-v2-x"),  # MLflow refuses / : . % and quotes in model names
        (None, "bert4rec"),
    ],
)
def test_logged_model_name(dataset: str | None, expected: str) -> None:
    assert logged_model_name(dataset) == expected


def test_run_name_says_which_config_and_what(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(to_yaml(load_config(None)), encoding="utf-8")
    cfg = load_config(path, ["train.max_epochs=2"])
    assert config_file(cfg) == path
    assert run_name("train", cfg) == "train demo.yaml"
    assert run_name("train", cfg, detail="resumed") == "train demo.yaml (resumed)"
    # Defaults (no file) name the dataset instead; a copy of a config does not claim its file.
    assert run_name("train", load_config(None)) == "train ml-latest-small"
    assert config_file(cfg.model_copy()) is None
