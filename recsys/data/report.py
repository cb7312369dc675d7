"""The data report: counts, sequence lengths, sparsity, what each filter removed, the split.

One dict (saved as ``report.json``), rendered as a plain-text table (:func:`format_table`) and a
histogram of sequence lengths (:func:`plot_lengths`, matplotlib with the Agg backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

if TYPE_CHECKING:
    from recsys.data.pipeline import Built

__all__ = ["DataReport", "build_report", "format_table", "length_stats", "plot_lengths", "warm_up_plotting"]


class Counted(TypedDict):
    rows: int
    users: int
    items: int


class DataReport(TypedDict):
    """``report.json`` of a prepared dataset (also in ``recsys prepare --json``)."""

    source: dict[str, str]  # path, format
    input: Counted
    users: int
    items: int
    interactions: int
    sparsity: float
    sequence_length: dict[str, float]  # min, median, mean, p90, max
    filters: list[dict[str, Any]]  # one entry per cleaning step (FilterStats.to_json)
    removed: Counted
    split: dict[str, Any]  # SplitSummary.to_json


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    """min / median / mean / p90 / max of per-user sequence lengths."""
    if lengths.size == 0:
        return {"min": 0.0, "median": 0.0, "mean": 0.0, "p90": 0.0, "max": 0.0}
    values = {
        "min": lengths.min(),
        "median": np.median(lengths),
        "mean": lengths.mean(),
        "p90": np.percentile(lengths, 90),
        "max": lengths.max(),
    }
    return {name: round(float(value), 3) for name, value in values.items()}


def build_report(built: Built) -> DataReport:
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


def format_table(report: DataReport) -> str:
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
        f"{split['users_with_validation']:,} with a validation target, "
        f"{split['users_with_test']:,} with a test target"
    )
    return "\n".join(lines)


def warm_up_plotting() -> None:
    """Import matplotlib ahead of time (about 1 s cold); :func:`prepare` runs this in a thread."""
    import matplotlib.backends.backend_agg
    import matplotlib.figure  # noqa: F401


def plot_lengths(lengths: np.ndarray, path: Path) -> None:
    """Histogram of per-user sequence lengths, on a log-length axis (the distribution is heavy-tailed).

    The histogram is computed with numpy and drawn with ``stairs`` on log10(length) with hand-placed
    ticks: the same picture as a log-scaled axis at a fraction of matplotlib's cost.
    """
    # The object-oriented API with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    smallest = max(int(lengths.min()), 1) if lengths.size else 1
    largest = max(int(lengths.max()) if lengths.size else 1, smallest * 10)
    # Integer bin edges, evenly spaced in log space: every bin holds whole lengths, so no aliasing.
    edges = np.unique(np.geomspace(smallest, largest + 1, num=41).round().astype(np.int64))
    counts, _ = np.histogram(lengths, bins=edges)
    axes.stairs(counts, np.log10(edges), fill=True, color="#4472c4")
    low, top = float(np.log10(edges[0])), float(np.log10(edges[-1]))
    steps = [m * 10**e for e in range(7) for m in (1, 2, 5)]
    ticks = [t for t in steps if low - 0.05 <= np.log10(t) <= top + 0.05]
    axes.set_xticks(np.log10(ticks), [f"{t:,}" for t in ticks])
    peak = float(counts.max()) if counts.size else 1.0
    if lengths.size:
        for value, label in ((np.median(lengths), "median"), (np.percentile(lengths, 90), "p90")):
            x = float(np.log10(max(value, 1)))
            axes.axvline(x, color="#c00000", linestyle="--", linewidth=1)
            axes.text(x, peak * 0.97, f" {label} {value:.0f}", color="#c00000", va="top")
    axes.set_xlabel("interactions per user (log scale)")
    axes.set_ylabel("users")
    axes.set_title(f"Sequence lengths ({lengths.size:,} users)")
    # Fixed margins: tight_layout would measure every text box, the slowest step of the whole plot.
    figure.subplots_adjust(left=0.12, right=0.97, top=0.92, bottom=0.13)
    figure.savefig(path, dpi=100)
