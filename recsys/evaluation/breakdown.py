"""Metrics by user segment: history-length buckets and target-popularity quantile buckets.

Input is the per-user table of :class:`recsys.evaluation.protocol.EvalResult` (``per_user``). Each bucket's
value is the mean over its users, so the user-weighted mean of the bucket rows equals the overall metric.
Tables are polars DataFrames; plots put the model and the baselines side by side (matplotlib, Agg canvas).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recsys.config import EvalConfig
from recsys.evaluation.protocol import EvalResult

__all__ = [
    "BreakdownBy",
    "breakdown",
    "breakdowns",
    "compare",
    "history_length_buckets",
    "plot_breakdown",
    "popularity_buckets",
    "popularity_edges",
    "save_breakdown",
]

BreakdownBy = Literal["history_length", "target_popularity"]

# Column names of the breakdown tables.
MODEL = "model"
BUCKET = "bucket"
BUCKET_INDEX = "bucket_index"
USERS = "users"
SHARE = "share"


def history_length_buckets(lengths: np.ndarray, edges: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """Bucket index per user and one label per bucket, from ascending upper edges (inclusive).

    Edges ``[5, 10, 20]`` give buckets ``<=5``, ``6-10``, ``11-20``, ``>20``.
    """
    upper = np.asarray(sorted(set(edges)), dtype=np.int64)
    index = np.searchsorted(upper, np.asarray(lengths), side="left")  # upper[i-1] < length <= upper[i]
    labels = [f"<={upper[0]}"] if len(upper) else []
    labels += [f"{lo + 1}-{hi}" for lo, hi in itertools.pairwise(upper)]
    labels.append(f">{upper[-1]}" if len(upper) else "all")
    return index, labels


def popularity_edges(popularity: np.ndarray, n_buckets: int) -> np.ndarray:
    """Inner upper edges splitting users into ``n_buckets`` quantile buckets of target popularity.

    Equal quantiles (many users share a popular target) collapse, so there may be fewer buckets.
    """
    if n_buckets <= 1 or len(popularity) == 0:
        return np.zeros(0)
    quantiles = np.quantile(np.asarray(popularity, dtype=np.float64), np.arange(1, n_buckets) / n_buckets)
    return np.unique(quantiles)


def popularity_buckets(popularity: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Bucket index per user (``edges[i-1] < popularity <= edges[i]``) and labels ``Q1 (lo-hi)`` giving the
    observed range of target popularity (training interactions) in each bucket."""
    pop = np.asarray(popularity, dtype=np.float64)
    index = np.searchsorted(edges, pop, side="left")
    labels = []
    for i in range(len(edges) + 1):
        inside = pop[index == i]
        span = f"{inside.min():.4g}-{inside.max():.4g}" if inside.size else "empty"
        labels.append(f"Q{i + 1} ({span})")
    return index, labels


def _metric_columns(per_user: Mapping[str, np.ndarray], metrics: Sequence[str] | None) -> list[str]:
    names = [name for name in per_user if "@" in name] if metrics is None else list(metrics)
    missing = [name for name in names if name not in per_user]
    if missing:
        raise KeyError(f"per-user table has no {missing}")
    return names


def breakdown(
    per_user: Mapping[str, np.ndarray],
    by: BreakdownBy,
    *,
    history_edges: Sequence[int] = (5, 10, 20, 50, 100, 200),
    n_popularity_buckets: int = 5,
    pop_edges: np.ndarray | None = None,
    metrics: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Mean of each per-user metric by bucket: columns ``bucket_index, bucket, users, share, <metrics>``.

    Args:
        per_user: ``EvalResult.per_user``.
        by: ``history_length`` (buckets from ``history_edges``) or ``target_popularity`` (quantile buckets
            from ``pop_edges``, or computed from these users with ``n_popularity_buckets``).
        metrics: per-user columns to average; default every ``name@k`` column.
    """
    if by not in per_user:
        raise KeyError(f"per-user table has no {by!r} column (target_popularity needs item_counts)")
    names = _metric_columns(per_user, metrics)
    if by == "history_length":
        index, labels = history_length_buckets(per_user[by], history_edges)
    else:
        edges = popularity_edges(per_user[by], n_popularity_buckets) if pop_edges is None else pop_edges
        index, labels = popularity_buckets(per_user[by], edges)
    frame = pl.DataFrame({BUCKET_INDEX: index.astype(np.int64), **{n: per_user[n] for n in names}})
    n_users = frame.height
    label_frame = pl.DataFrame({BUCKET_INDEX: np.arange(len(labels), dtype=np.int64), BUCKET: labels})
    return (
        frame.lazy()
        .group_by(BUCKET_INDEX)
        .agg(pl.len().alias(USERS), *[pl.col(n).mean() for n in names])
        .with_columns((pl.col(USERS) / n_users).alias(SHARE))
        .join(label_frame.lazy(), on=BUCKET_INDEX, how="left")
        .sort(BUCKET_INDEX)
        .select(BUCKET_INDEX, BUCKET, USERS, SHARE, *names)
        .collect()
    )


def compare(
    results: Mapping[str, EvalResult],
    by: BreakdownBy,
    *,
    cfg: EvalConfig | None = None,
    metrics: Sequence[str] | None = None,
) -> pl.DataFrame:
    """One breakdown table for several scorers (model first, then baselines), with a ``model`` column.

    Popularity buckets are cut once, from the first result's users, so every scorer uses the same buckets.
    """
    cfg = cfg or EvalConfig()
    tables = []
    pop_edges = None
    for name, result in results.items():
        if result.per_user is None:
            raise ValueError(f"{name}: evaluate with per_user=True to break metrics down")
        if by == "target_popularity" and pop_edges is None and by in result.per_user:
            pop_edges = popularity_edges(result.per_user[by], cfg.popularity_buckets)
        table = breakdown(
            result.per_user,
            by,
            history_edges=cfg.history_buckets,
            n_popularity_buckets=cfg.popularity_buckets,
            pop_edges=pop_edges,
            metrics=metrics,
        )
        tables.append(table.select(pl.lit(name).alias(MODEL), pl.all()))
    return pl.concat(tables, how="vertical")


def breakdowns(results: Mapping[str, EvalResult], cfg: EvalConfig) -> dict[BreakdownBy, pl.DataFrame]:
    """Both breakdowns (popularity only when the per-user tables have ``target_popularity``)."""
    out: dict[BreakdownBy, pl.DataFrame] = {"history_length": compare(results, "history_length", cfg=cfg)}
    if all(r.per_user is not None and "target_popularity" in r.per_user for r in results.values()):
        out["target_popularity"] = compare(results, "target_popularity", cfg=cfg)
    return out


def plot_breakdown(
    table: pl.DataFrame, metrics: Sequence[str], path: str | Path, *, title: str | None = None
) -> Path:
    """Grouped bar chart, one panel per metric, buckets on x with user counts, one bar per model."""
    if MODEL not in table.columns:
        table = table.select(pl.lit("model").alias(MODEL), pl.all())
    models = table.get_column(MODEL).unique(maintain_order=True).to_list()
    buckets = table.select(BUCKET_INDEX, BUCKET, USERS).unique(BUCKET_INDEX).sort(BUCKET_INDEX)
    positions = {b: i for i, b in enumerate(buckets.get_column(BUCKET_INDEX).to_list())}
    ticks = [f"{b}\n(n={u})" for b, u in zip(buckets[BUCKET], buckets[USERS], strict=True)]
    width = 0.8 / max(len(models), 1)

    fig = Figure(figsize=(max(6.0, 1.2 * len(positions) * max(1, len(models)) ** 0.5), 3.2 * len(metrics)))
    FigureCanvasAgg(fig)  # attaches an Agg canvas: no pyplot, no global backend switch
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics, strict=True):
        for m, model in enumerate(models):
            rows = table.filter(pl.col(MODEL) == model)
            x = np.array([positions[b] for b in rows[BUCKET_INDEX]]) + (m - (len(models) - 1) / 2) * width
            ax.bar(x, rows[metric].to_numpy(), width=width, label=model)
        ax.set_xticks(range(len(ticks)), ticks, fontsize=8)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def save_breakdown(
    table: pl.DataFrame,
    out_dir: str | Path,
    name: str,
    *,
    metrics: Sequence[str] = ("ndcg@10", "hr@10"),
) -> dict[str, Path]:
    """Write ``<name>.csv``, ``<name>.parquet`` and ``<name>.png`` (bars of ``metrics``) into ``out_dir``."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": directory / f"{name}.csv",
        "parquet": directory / f"{name}.parquet",
        "png": directory / f"{name}.png",
    }
    table.write_csv(paths["csv"])
    table.write_parquet(paths["parquet"])
    plotted = [m for m in metrics if m in table.columns]
    if plotted:
        plot_breakdown(table, plotted, paths["png"], title=name)
    else:
        del paths["png"]
    return paths
