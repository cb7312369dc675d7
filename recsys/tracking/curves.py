"""The learning-curve figure (training loss and validation metrics per epoch) logged to a run."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recsys.tracking.names import metric_name
from recsys.tracking.tracker import Tracker

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["log_learning_curve"]


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one metric; epochs without it (validation every n epochs) are skipped."""
    wanted = metric_name(key)
    xs: list[float] = []
    ys: list[float] = []
    for i, record in enumerate(history):
        for k, v in record.items():
            if metric_name(k) == wanted and v is not None and math.isfinite(float(v)):
                xs.append(float(record.get("epoch", i)))
                ys.append(float(v))
                break
    return xs, ys


def log_learning_curve(
    tracker: Tracker,
    history: Sequence[Mapping[str, Any]],
    *,
    loss_key: str = "train_loss",
    metric_keys: Sequence[str] = ("val_ndcg_at_10", "val_hr_at_10"),
    artifact_file: str = "learning_curve.png",
) -> Figure | None:
    """Plot per-epoch training loss and validation metrics side by side and log the PNG.

    ``history`` is one dict per epoch (``recsys.training.fit``'s ``history``: ``epoch``, ``train_loss``,
    ``val_ndcg_at_10``, ...); keys are matched through ``metric_name``, so ``val_ndcg@10`` works too.
    Returns the figure (None when tracking is disabled or the history is empty).
    """
    if not tracker.enabled or not history:
        return None
    # A bare Figure renders with Agg and never touches pyplot's global backend or figure registry.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2)
    xs, ys = _series(history, loss_key)
    loss_ax.plot(xs, ys, marker="o", color="tab:red")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel=loss_key)
    for key in metric_keys:
        mx, my = _series(history, key)
        if mx:
            metric_ax.plot(mx, my, marker="o", label=key)
    metric_ax.set(title="validation", xlabel="epoch")
    if metric_ax.lines:
        metric_ax.legend()
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    tracker.log_figure(fig, artifact_file)
    return fig
