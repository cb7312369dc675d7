"""The Lightning logger that writes a training run's per-epoch metrics into the open MLflow run.

A module of its own (not a class built inside a function) so that it pickles: ``ddp_spawn`` sends the
trainer's loggers to its worker processes. Imported only when a run is tracked: Lightning is slow to import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytorch_lightning.loggers import MLFlowLogger

from recsys.tracking.names import epoch_metric

__all__ = ["RunLogger"]

# Lightning adds the (0-based) epoch counter to every dict it logs; the step already is the epoch.
_LIGHTNING_EPOCH = "epoch"


class RunLogger(MLFlowLogger):
    """``MLFlowLogger`` into an existing run, which it leaves open when ``fit`` ends.

    It skips ``log_hyperparams`` (the full config is already logged as params; module hparams would
    repeat it under other names and clash on a resumed run), names metrics by their section
    (:func:`~recsys.tracking.names.epoch_metric`: ``train_loss -> train/loss``, ``val_ndcg_at_10 ->
    val/ndcg_at_10``) and drops Lightning's own ``epoch`` counter.
    """

    def log_hyperparams(self, params: Any) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        named = {epoch_metric(k): v for k, v in metrics.items() if k != _LIGHTNING_EPOCH}
        if named:
            super().log_metrics(named, step)

    def finalize(self, status: str = "success") -> None:
        # Deliberately not terminating the run: evaluation and artifacts still follow ``fit``.
        return None
