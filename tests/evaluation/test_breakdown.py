"""Breakdowns: bucket edges and labels, tables that add back up to the overall metric, files and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import EvalConfig
from recsys.data.sequences import Sequences
from recsys.evaluation.baselines import LastItemTransitions, MostPopular, item_counts_from_csr
from recsys.evaluation.breakdown import (
    BreakdownBy,
    breakdown,
    breakdowns,
    compare,
    history_length_buckets,
    popularity_buckets,
    popularity_edges,
    save_breakdown,
)
from recsys.evaluation.protocol import EvalResult, Scorer, evaluate


def test_history_buckets_by_hand() -> None:
    index, labels = history_length_buckets(np.array([1, 5, 6, 10, 11, 300]), [5, 10])
    assert index.tolist() == [0, 0, 1, 1, 2, 2]  # upper edges are inclusive
    assert labels == ["<=5", "6-10", ">10"]


def test_popularity_buckets_by_hand() -> None:
    pop = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=float)
    edges = popularity_edges(pop, 2)  # median 4.5
    assert edges.tolist() == [4.5]
    index, labels = popularity_buckets(pop, edges)
    assert index.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert labels == ["Q1 (1-4)", "Q2 (5-8)"]
    assert popularity_edges(np.full(10, 7.0), 4).tolist() == [7.0]  # equal quantiles collapse


@pytest.fixture(scope="module")
def results() -> dict[str, EvalResult]:
    rng = np.random.default_rng(0)
    n_items, n_users = 80, 400
    # Zipf-like item choice so that popularity buckets differ; history lengths from 1 to 150.
    weights = 1.0 / np.arange(1, n_items + 1)
    weights /= weights.sum()
    seqs = [
        rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(2, 150)), p=weights)
        for _ in range(n_users)
    ]
    train = Sequences.from_lists(s[:-1] for s in seqs)
    targets = Sequences.from_lists(s[-1:] for s in seqs)
    counts = item_counts_from_csr(train.items, n_items)
    scorers: dict[str, Scorer] = {
        "transitions": LastItemTransitions(train, n_items),
        "most_popular": MostPopular(counts, n_items),
    }
    return {
        name: evaluate(scorer, train, targets, ks=[5, 10], n_items=n_items, item_counts=counts, per_user=True)
        for name, scorer in scorers.items()
    }


@pytest.mark.parametrize("by", ["history_length", "target_popularity"])
def test_user_weighted_buckets_equal_the_overall_metric(
    results: dict[str, EvalResult], by: BreakdownBy
) -> None:
    for result in results.values():
        assert result.per_user is not None
        table = breakdown(result.per_user, by, history_edges=[5, 10, 20, 50, 100], n_popularity_buckets=4)
        assert table.get_column("users").sum() == result.metrics["users"]
        assert table.get_column("share").sum() == pytest.approx(1.0)
        assert table.height >= 2
        for name in ("ndcg@10", "hr@5", "mrr@10", "popularity@10", "novelty@5"):
            users = table.get_column("users").to_numpy()
            weighted = float((table.get_column(name).to_numpy() * users).sum() / users.sum())
            assert weighted == pytest.approx(result.metrics[name], abs=1e-9), name


def test_compare_uses_the_same_buckets_for_every_model(
    results: dict[str, EvalResult], tmp_path: Path
) -> None:
    cfg = EvalConfig(history_buckets=[10, 50, 100], popularity_buckets=3)
    tables = breakdowns(results, cfg)
    assert set(tables) == {"history_length", "target_popularity"}
    for table in tables.values():
        assert table.columns[:5] == ["model", "bucket_index", "bucket", "users", "share"]
        per_model = [
            table.filter(pl.col("model") == name).select("bucket", "users")
            for name in ("transitions", "most_popular")
        ]
        assert per_model[0].equals(per_model[1])
    assert tables["history_length"].get_column("bucket").unique(maintain_order=True).to_list() == [
        "<=10",
        "11-50",
        "51-100",
        ">100",
    ]

    paths = save_breakdown(compare(results, "history_length", cfg=cfg), tmp_path / "out", "by_history")
    assert {p.name for p in paths.values()} == {"by_history.csv", "by_history.parquet", "by_history.png"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pl.read_parquet(paths["parquet"]).equals(pl.read_csv(paths["csv"]))


def test_breakdown_needs_per_user_tables() -> None:
    with pytest.raises(ValueError, match="per_user=True"):
        compare({"m": EvalResult({"users": 1.0})}, "history_length")
    with pytest.raises(KeyError, match="target_popularity"):
        breakdown({"history_length": np.array([1]), "ndcg@10": np.array([1.0])}, "target_popularity")
