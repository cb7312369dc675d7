"""The learning-curve figure: integer epochs from 1, baselines as horizontal lines, the best epoch marked."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from recsys.config import load_config
from recsys.tracking.curves import learning_curve, log_learning_curve
from recsys.tracking.run import tracked_run
from recsys.tracking.store import resolve_tracking_uri

# Five epochs; validation every epoch but the fourth; NDCG@10 peaks at the third epoch.
HISTORY = [
    {"epoch": 0.0, "train_loss": 5.0, "val_ndcg_at_10": 0.10, "val_hr_at_10": 0.20},
    {"epoch": 1.0, "train_loss": 4.0, "val_ndcg_at_10": 0.15, "val_hr_at_10": 0.30},
    {"epoch": 2.0, "train_loss": 3.5, "val_ndcg_at_10": 0.21, "val_hr_at_10": 0.33},
    {"epoch": 3.0, "train_loss": 3.2},
    {"epoch": 4.0, "train_loss": 3.0, "val_ndcg_at_10": 0.19, "val_hr_at_10": 0.35},
]
BASELINES = {"most_popular": {"ndcg@10": 0.05, "hr@10": 0.09}, "transitions": {"ndcg@10": 0.12}}


def _lines(ax):  # type: ignore[no-untyped-def]
    return [
        (tuple(np.asarray(line.get_xdata(), float)), tuple(np.asarray(line.get_ydata(), float)))
        for line in ax.lines
    ]


def test_epochs_are_integers_from_one() -> None:
    fig = learning_curve(HISTORY, baselines=BASELINES)
    fig.canvas.draw()
    loss_ax, metric_ax = fig.axes
    assert _lines(loss_ax)[0] == ((1, 2, 3, 4, 5), (5.0, 4.0, 3.5, 3.2, 3.0))
    assert _lines(metric_ax)[0][0] == (1, 2, 3, 5)  # the epoch without validation is skipped
    for ax in (loss_ax, metric_ax):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_baselines_are_horizontal_lines_and_the_best_epoch_is_marked() -> None:
    fig = learning_curve(HISTORY, baselines=BASELINES)
    loss_ax, metric_ax = fig.axes
    labels = [line.get_label() for line in metric_ax.lines]
    flat = {
        label: ys[0] for label, (xs, ys) in zip(labels, _lines(metric_ax), strict=True) if len(set(ys)) == 1
    }
    assert flat["most popular NDCG@10 (0.0500)"] == pytest.approx(0.05)
    assert flat["transitions NDCG@10 (0.1200)"] == pytest.approx(0.12)
    assert flat["most popular HR@10 (0.0900)"] == pytest.approx(0.09)
    assert not any(label.startswith("transitions HR") for label in labels)  # no value, no line
    for ax in (loss_ax, metric_ax):
        (best,) = [
            xs
            for line, (xs, _) in zip(ax.lines, _lines(ax), strict=True)
            if "best epoch" in str(line.get_label())
        ]
        assert best == (3, 3)
        assert "best epoch 3" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_logged_png(local_store: Path, tmp_path: Path) -> None:
    cfg = load_config(None, ["tracking.experiment=curves"])
    with tracked_run(cfg, "train", dataset="tiny") as tracker:
        assert log_learning_curve(tracker, HISTORY, baselines=BASELINES) is not None
        assert tracker.run_id is not None
    client = MlflowClient(resolve_tracking_uri(cfg.tracking))
    png = Path(client.download_artifacts(tracker.run_id, "learning_curve.png", str(tmp_path)))
    image = Image.open(io.BytesIO(png.read_bytes()))
    assert image.format == "PNG"
    assert image.width > image.height >= 300
    colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50  # drawn, not blank
