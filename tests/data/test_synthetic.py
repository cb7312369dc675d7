"""The synthetic log generator: seeded, exact sizes, realistic shape, files that read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data.synthetic import SyntheticSpec, generate_log, write_log
from tests.data.conftest import data_config


def test_seeded_and_exact_sizes() -> None:
    spec = SyntheticSpec(n_users=300, n_items=200, n_interactions=20_000, seed=7)
    first = generate_log(spec)
    assert first.equals(generate_log(spec))
    assert not first.equals(generate_log(spec, seed=8))
    assert first.height == 20_000 and first["user_id"].n_unique() == 300
    assert first["item_id"].n_unique() <= 200
    assert first.columns == ["user_id", "item_id", "rating", "timestamp"]


def test_realistic_shape() -> None:
    log = generate_log(n_users=2_000, n_items=1_000, n_interactions=100_000, seed=3)
    popularity = log["item_id"].value_counts(sort=True)["count"].to_numpy()
    # Power law: the head is much more popular than the median item, which beats the tail.
    assert popularity[0] > 5 * np.median(popularity) > 5 * popularity[-1] / 5
    lengths = log["user_id"].value_counts()["count"].to_numpy()
    assert lengths.min() >= 1 and lengths.max() > 5 * np.median(lengths)
    assert log["timestamp"].is_sorted()  # a time-ordered event stream
    gaps = log.group_by("user_id").agg(pl.col("timestamp").diff().min().alias("gap"))["gap"]
    assert int(gaps.drop_nulls().min()) >= 0  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".tsv"])
def test_written_logs_prepare(tmp_path: Path, suffix: str) -> None:
    path = write_log(tmp_path / f"log{suffix}", n_users=50, n_items=40, n_interactions=1_000, seed=1)
    from recsys.data.pipeline import build

    built = build(data_config(path))
    assert built.input_rows == 1_000 and len(built.users) == 50


def test_too_few_interactions() -> None:
    with pytest.raises(ValueError, match="n_interactions"):
        generate_log(n_users=10, n_items=5, n_interactions=5)


def test_minimum_events_per_user_and_item() -> None:
    log = generate_log(
        n_users=400, n_items=900, n_interactions=4_000, min_user_events=5, min_item_events=1, seed=2
    )
    assert log.height == 4_000
    assert log["user_id"].value_counts()["count"].min() == 5  # the floor, and some users sit on it
    assert log["item_id"].n_unique() == 900  # no item left out of the catalogue
    popularity = log["item_id"].value_counts(sort=True)["count"].to_numpy()
    assert popularity[0] > 10 * np.median(popularity)  # still a power law above the floor


def test_minimums_that_cannot_fit() -> None:
    with pytest.raises(ValueError, match="min_user_events"):
        generate_log(n_users=10, n_items=5, n_interactions=40, min_user_events=5)
    with pytest.raises(ValueError, match="min_item_events"):
        generate_log(n_users=10, n_items=50, n_interactions=40, min_item_events=1)
