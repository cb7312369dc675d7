"""The learning-curve figure logged to a run: training loss and validation metrics per epoch.

Epochs are counted from 1 on an integer axis, the baselines' validation values are horizontal lines
beside the model's curves (the bar the model has to clear), and the best epoch (the one whose weights the
bundle holds) is marked on both panels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recsys.tracking.names import metric_name
from recsys.tracking.tracker import Tracker

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["learning_curve", "log_learning_curve"]

_METRIC_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")
_BASELINE_STYLES = ("--", ":", "-.")


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(epochs from 1, values) of one metric; epochs without it (validation every n epochs) are skipped.

    The epoch is the record's position: the history holds one record per epoch in order (a resumed run
    restores the earlier ones from its checkpoint), whatever base its ``epoch`` field counts from.
    """
    wanted = metric_name(key)
    xs: list[int] = []
    ys: list[float] = []
    for i, record in enumerate(history):
        for k, v in record.items():
            if metric_name(k) == wanted and v is not None and math.isfinite(float(v)):
                xs.append(i + 1)
                ys.append(float(v))
                break
    return xs, ys


def _label(key: str) -> str:
    """``val_ndcg_at_10 -> NDCG@10``."""
    name = metric_name(key).removeprefix("val_")
    metric, _, k = name.partition("_at_")
    return f"{metric.upper()}@{k}" if k else metric


def _baseline_value(values: Mapping[str, float], key: str) -> float | None:
    """The baseline's value of validation metric ``key`` (``val_ndcg_at_10`` matches ``ndcg@10``)."""
    wanted = metric_name(key).removeprefix("val_")
    for name, value in values.items():
        if metric_name(name) == wanted and math.isfinite(float(value)):
            return float(value)
    return None


def learning_curve(
    history: Sequence[Mapping[str, Any]],
    *,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    loss_key: str = "train_loss",
    metric_keys: Sequence[str] = ("val_ndcg_at_10", "val_hr_at_10"),
) -> Figure:
    """Training loss (left) and validation metrics (right) by epoch, as a matplotlib ``Figure``.

    Args:
        history: one dict per epoch (``recsys.training.fit``'s ``history``: ``train_loss``,
            ``val_ndcg_at_10``, ...); keys are matched through ``metric_name``, so ``val_ndcg@10`` works too.
        baselines: validation metrics per baseline (``{"most_popular": {"ndcg@10": ...}}``), drawn as
            horizontal lines in the colour of the metric they compare with.
        loss_key: the training-loss key.
        metric_keys: validation metrics to plot; the first one picks the best epoch (as training does).
    """
    # A bare Figure renders with Agg and never touches pyplot's global backend or figure registry.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2)
    xs, ys = _series(history, loss_key)
    loss_ax.plot(xs, ys, marker="o", markersize=3, color="tab:red")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel=loss_key)
    for key, colour in zip(metric_keys, _METRIC_COLOURS, strict=False):
        mx, my = _series(history, key)
        if mx:
            metric_ax.plot(mx, my, marker="o", markersize=3, color=colour, label=f"BERT4Rec {_label(key)}")
        for (name, values), style in zip((baselines or {}).items(), _BASELINE_STYLES, strict=False):
            value = _baseline_value(values, key)
            if value is not None:
                label = f"{name.replace('_', ' ')} {_label(key)} ({value:.4f})"
                metric_ax.axhline(value, color=colour, linestyle=style, linewidth=1.2, label=label)
    metric_ax.set(title="validation", xlabel="epoch")
    bx, by = _series(history, metric_keys[0]) if metric_keys else ([], [])
    if bx:
        best = bx[max(range(len(by)), key=by.__getitem__)]  # the first maximum, as training picks it
        for ax in (loss_ax, metric_ax):
            ax.axvline(best, color="0.35", linestyle="-.", linewidth=1.0, label=f"best epoch {best}")
        metric_ax.plot([best], [max(by)], marker="*", markersize=14, color=_METRIC_COLOURS[0], linestyle="")
        loss_ax.legend(loc="upper right", fontsize="small")
    if metric_ax.lines:
        metric_ax.legend(loc="best", fontsize="small")
    for ax in (loss_ax, metric_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    return fig


def log_learning_curve(
    tracker: Tracker,
    history: Sequence[Mapping[str, Any]],
    *,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    artifact_file: str = "learning_curve.png",
) -> Figure | None:
    """Draw :func:`learning_curve` and log it as ``artifact_file``.

    Returns the figure (None when tracking is disabled or the history is empty).
    """
    if not tracker.enabled or not history:
        return None
    fig = learning_curve(history, baselines=baselines)
    tracker.log_figure(fig, artifact_file)
    return fig
