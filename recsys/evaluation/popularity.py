"""Recommendations against catalogue popularity: which share of each scorer's top-k slots falls in each
popularity decile of the catalogue (a popularity-biased scorer puts most of them in decile 1)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["DECILES", "plot_popularity", "popularity_deciles", "recommendation_popularity"]

DECILES = 10


def popularity_deciles(item_counts: np.ndarray, n_items: int) -> np.ndarray:
    """int64[V]: catalogue-popularity decile (0 = the most popular 10% of items) of every item column.

    Items are ranked by training count (ties by index); PAD and MASK get -1.
    """
    counts = np.asarray(item_counts, dtype=np.int64)[1 : n_items + 1]
    order = np.lexsort((np.arange(n_items), -counts))  # by count descending, then index
    deciles = np.full(n_items + 2, -1, dtype=np.int64)
    deciles[order + 1] = np.arange(n_items) * DECILES // n_items
    return deciles


def recommendation_popularity(
    tops: Mapping[str, np.ndarray], item_counts: np.ndarray, n_items: int, *, k: int
) -> pl.DataFrame:
    """Share of each scorer's top-k slots per catalogue-popularity decile, beside the decile's share of
    training interactions (and of items). A popularity-biased scorer puts most slots in decile 1.

    Args:
        tops: per scorer, every user's ranked item indices (int[users, >= k], PAD = empty slot), e.g.
            :attr:`~recsys.evaluation.protocol.EvalResult.top`: the lists the metrics were computed on.
    """
    deciles = popularity_deciles(item_counts, n_items)
    counts = np.asarray(item_counts, dtype=np.float64)
    real = deciles >= 0
    catalogue = np.bincount(deciles[real], weights=counts[real], minlength=DECILES)
    table: dict[str, Any] = {
        "decile": np.arange(1, DECILES + 1),
        "items": np.bincount(deciles[real], minlength=DECILES),
        "catalogue_share": catalogue / max(catalogue.sum(), 1.0),
    }
    for name, top in tops.items():
        items = np.asarray(top)[:, :k]
        slots = np.bincount(deciles[items[items > 0]], minlength=DECILES).astype(np.float64)
        table[f"{name}_share"] = slots / max(slots.sum(), 1.0)
    return pl.DataFrame(table)


def plot_popularity(table: pl.DataFrame, path: Path, k: int) -> Path:
    shares = [c for c in table.columns if c.endswith("_share")]
    fig = Figure(figsize=(9, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(table.height)
    width = 0.8 / len(shares)
    for i, column in enumerate(shares):
        label = "catalogue interactions" if column == "catalogue_share" else column.removesuffix("_share")
        ax.bar(x + (i - (len(shares) - 1) / 2) * width, table[column].to_numpy(), width=width, label=label)
    ax.set_xticks(x, [f"D{d}" for d in table["decile"]])
    ax.set(
        xlabel="catalogue popularity decile (D1 = most popular 10% of items)",
        ylabel="share",
        title=f"top-{k} recommendations vs catalogue popularity",
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
