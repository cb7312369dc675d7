"""The Lightning logger that writes a training run's per-epoch metrics into the open MLflow run.

A module of its own (not a class built inside a function) so that it pickles: ``ddp_spawn`` sends the
trainer's loggers to its worker processes. Imported only when a run is tracked: Lightning is slow to import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytorch_lightning.loggers import MLFlowLogger

from recsys.tracking.names import metric_name

__all__ = ["RunLogger"]


class RunLogger(MLFlowLogger):
    """``MLFlowLogger`` into an existing run, which it leaves open when ``fit`` ends.

    It skips ``log_hyperparams`` (the full config is already logged as params; module hparams would
    repeat it under other names and clash on a resumed run) and spells metric names with
    :func:`~recsys.tracking.names.metric_name` instead of dropping the '@'.
    """

    def log_hyperparams(self, params: Any) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({metric_name(k): v for k, v in metrics.items()}, step)

    def finalize(self, status: str = "success") -> None:
        # Deliberately not terminating the run: evaluation and artifacts still follow ``fit``.
        return None
