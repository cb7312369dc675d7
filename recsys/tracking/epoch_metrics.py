"""Per-epoch metrics the training loop does not record itself, for the run's loggers (step = epoch).

- ``val/best_ndcg_at_10``: the best validation NDCG@10 so far (the bundle's epoch at the end), so the
  runs table's latest value of it is the run's best, and the chart shows when the model stopped improving;
- ``system/cpu_cores_busy``: process CPU time (user + system, all threads) over the epoch's wall time,
  i.e. how many cores the epoch kept busy on average;
- ``system/peak_rss_gb``: the process's peak resident memory so far;
- ``system/gpu_peak_memory_gb``: peak CUDA memory allocated by torch (on CUDA only).

MLflow's own system-metrics monitor samples on a clock (its own step counter) and needs psutil; these are
measured once per epoch, so they share the x-axis of every other training chart. Lightning callbacks
holding no client (they log through ``trainer.loggers``), so they pickle for ``ddp_spawn``; only rank 0
logs. Imported only when a run is tracked: Lightning is slow to import.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time

import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from recsys.tracking.names import SYSTEM, VAL, epoch_metric
from recsys.training.fit import MONITOR

__all__ = ["BestSoFar", "SystemMetrics"]

_GB = 1024**3


def _log(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.current_epoch + 1)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux reports KiB


class BestSoFar(L.Callback):
    """Log the best validation NDCG@10 so far as ``val/best_ndcg_at_10`` after every validated epoch.

    The earlier best comes from the best-checkpoint callback (so a resumed run continues from the
    checkpoint's best); Lightning runs checkpoint callbacks last, so this epoch's value is added here.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        current = trainer.callback_metrics.get(MONITOR)
        if not trainer.is_global_zero or current is None or not math.isfinite(float(current)):
            return
        best = float(current)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.monitor == MONITOR:
                earlier = callback.best_model_score
                if earlier is not None and math.isfinite(float(earlier)):
                    best = max(best, float(earlier))
        name = epoch_metric(MONITOR).removeprefix(f"{VAL}/")
        _log(trainer, {f"{VAL}/best_{name}": best})


class SystemMetrics(L.Callback):
    """Log ``system/*`` resource metrics at the end of every training epoch."""

    def __init__(self) -> None:
        self._wall = 0.0
        self._cpu = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._wall = time.perf_counter()
        self._cpu = _cpu_seconds()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        wall = max(time.perf_counter() - self._wall, 1e-9)
        metrics = {
            f"{SYSTEM}/cpu_cores_busy": (_cpu_seconds() - self._cpu) / wall,
            f"{SYSTEM}/peak_rss_gb": _peak_rss_bytes() / _GB,
        }
        if pl_module.device.type == "cuda":
            metrics[f"{SYSTEM}/gpu_peak_memory_gb"] = torch.cuda.max_memory_allocated(pl_module.device) / _GB
        _log(trainer, metrics)
