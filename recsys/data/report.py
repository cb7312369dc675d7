"""The data report: counts, sequence lengths, sparsity, what each filter removed, the split.

One dict (saved as ``report.json``), rendered as a plain-text table (:func:`format_table`) and a
histogram of sequence lengths (:func:`plot_lengths`, matplotlib with the Agg backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from recsys.data.pipeline import Built

__all__ = ["build_report", "format_table", "length_stats", "plot_lengths"]


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    """min / median / mean / p90 / max of per-user sequence lengths."""
    if lengths.size == 0:
        return {"min": 0.0, "median": 0.0, "mean": 0.0, "p90": 0.0, "max": 0.0}
    return {
        "min": float(lengths.min()),
        "median": float(np.median(lengths)),
        "mean": round(float(lengths.mean()), 3),
        "p90": float(np.percentile(lengths, 90)),
        "max": float(lengths.max()),
    }


def build_report(built: Built) -> dict[str, Any]:
    """The report of a built dataset (see the module docstring)."""
    n_users = len(built.users)
    n_items = len(built.items)
    n = built.interactions.height
    return {
        "source": {"path": str(built.source.path), "format": built.source.format},
        "input": {"rows": built.input_rows, "users": built.input_users, "items": built.input_items},
        "users": n_users,
        "items": n_items,
        "interactions": n,
        "sparsity": round(1.0 - n / (n_users * n_items), 6) if n_users and n_items else 1.0,
        "sequence_length": length_stats(built.user_lengths()),
        "filters": [stats.to_json() for stats in built.filters],
        "removed": {
            "rows": built.input_rows - n,
            "users": built.input_users - n_users,
            "items": built.input_items - n_items,
        },
        "split": built.split.to_json(),
    }


def _num(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    width = 22
    lines = [f"Data report: {report['source']['path']} ({report['source']['format']})"]
    lines.append(f"{'':<{width}}{'rows':>14}{'users':>10}{'items':>10}")
    given = report["input"]
    lines.append(f"{'input':<{width}}{given['rows']:>14,}{given['users']:>10,}{given['items']:>10,}")
    for step in report["filters"]:
        label = f"- {step['step']}"
        if step["step"] == "k_core":
            label += f" ({step['rounds']} rounds)"
        lines.append(
            f"{label:<{width}}{step['rows_removed']:>14,}{step['users_removed']:>10,}{step['items_removed']:>10,}"
        )
    lines.append(
        f"{'= prepared':<{width}}{report['interactions']:>14,}{report['users']:>10,}{report['items']:>10,}"
    )
    lines.append(f"sparsity: {report['sparsity']:.4%}")
    stats = report["sequence_length"]
    lines.append("sequence length: " + "  ".join(f"{k} {_num(v)}" for k, v in stats.items()))
    split = report["split"]
    cutoffs = ""
    if split["test_cutoff"] is not None:
        cutoffs = f" (test >= {_num(split['test_cutoff'])}"
        if split["validation_cutoff"] is not None:
            cutoffs += f", validation >= {_num(split['validation_cutoff'])}"
        cutoffs += ")"
    lines.append(
        f"split: {split['kind']}{cutoffs}  train {split['train_rows']:,}  "
        f"validation {split['validation_rows']:,}  test {split['test_rows']:,}"
    )
    lines.append(
        f"users: {split['users_with_train']:,} with training events, "
        f"{split['users_without_train']:,} without (kept), "
        f"{split['users_with_validation']:,} with a validation target, {split['users_with_test']:,} with a test target"
    )
    return "\n".join(lines)


def plot_lengths(lengths: np.ndarray, path: Path) -> None:
    """Histogram of per-user sequence lengths (log-spaced bins: the distribution is heavy-tailed)."""
    # The object-oriented API with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    top = max(int(lengths.max()) if lengths.size else 1, 2)
    bins = np.unique(np.geomspace(1, top + 1, num=40).astype(np.int64))
    axes.hist(lengths, bins=bins, color="#4472c4", edgecolor="white", linewidth=0.4)
    axes.set_xscale("log")
    if lengths.size:
        for value, label in ((np.median(lengths), "median"), (np.percentile(lengths, 90), "p90")):
            axes.axvline(float(value), color="#c00000", linestyle="--", linewidth=1)
            axes.text(float(value), axes.get_ylim()[1] * 0.95, f" {label} {value:.0f}", color="#c00000", va="top")
    axes.set_xlabel("interactions per user (log scale)")
    axes.set_ylabel("users")
    axes.set_title(f"Sequence lengths ({lengths.size:,} users)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
