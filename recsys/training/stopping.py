"""Early stopping that one noisy validation cannot trigger.

Lightning's ``EarlyStopping`` compares each raw validation with the best raw one so far: a single lucky
validation early in a long schedule sets a bar the next ``patience`` epochs fail to clear, and the run
stops long before the learning rate has decayed (the bundled demo stopped at epoch 29 of a 60-epoch cosine
on a spike at epoch 9). Here the rule reads the median of the last ``window`` validations: a single
outlier, high or low, never moves it past its neighbours (with ``window >= 3``; a moving mean would still
carry a third of a spike for three validations), and it may fire only once ``min_fraction`` of the
schedule's epochs are done (with a time budget, of the fitted schedule). The best checkpoint is still
the best raw validation (``ModelCheckpoint``): smoothing decides when to stop, not what to ship.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from statistics import median
from typing import Any

import pytorch_lightning as L

from recsys.training.budget import TimeBudget
from recsys.training.schedule import LRSchedule

log = logging.getLogger("recsys.train")

__all__ = ["Plateau", "SmoothedEarlyStopping"]


class Plateau:
    """Counts validations since the moving median of the last ``window`` values last improved.

    The count starts once the window is full: the median of a part-filled window is a mean of two for
    ``window`` 3 or 4, which a spike would move.
    """

    def __init__(self, patience: int, window: int = 1, min_delta: float = 0.0) -> None:
        if patience < 1 or window < 1:
            raise ValueError(f"need patience >= 1 and window >= 1, got {patience=}, {window=}")
        self.patience = patience
        self.window = window
        self.min_delta = min_delta
        self.recent: deque[float] = deque(maxlen=window)
        self.best: float | None = None
        self.waited = 0

    def update(self, value: float) -> bool:
        """Record one validation (higher is better); True when ``patience`` have gone without a gain."""
        self.recent.append(value)
        if len(self.recent) < self.window:
            return False
        smoothed = median(self.recent)
        if self.best is None or smoothed > self.best + self.min_delta:
            self.best = smoothed
            self.waited = 0
        else:
            self.waited += 1
        return self.waited >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "best": self.best, "waited": self.waited}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = deque((float(v) for v in state.get("recent", [])), maxlen=self.window)
        self.best = state.get("best")
        self.waited = int(state.get("waited", 0))


class SmoothedEarlyStopping(L.Callback):
    """Acts when :class:`Plateau` says so: stops, or anneals the learning rate and then ends.

    ``on_plateau="stop"`` stops the run once ``min_fraction`` of the epochs are done (Lightning's
    ``EarlyStopping``, smoothed). ``on_plateau="decay"`` (warm-up, stable, decay): a validation plateau
    while the learning rate is still high says the model has learnt what it can at that rate, and what
    it still lacks is the annealing, which a cosine planned for a long budget would give it only at the
    end, after many epochs of overfitting at a high rate. So the decay is re-planned to run from the
    current learning rate to its floor over the next ``decay_fraction`` x the epochs done so far (0.25:
    the last fifth of the run, as in warm-up-stable-decay schedules), and the run ends there: the cosine
    is completed, never cut. Any time after the warm-up; once only.

    Args:
        monitor: the metric (higher is better) in ``trainer.callback_metrics`` after validation.
        patience: validations without a gain of the smoothed metric.
        window: validations the median is taken over (1: the raw metric, as Lightning's
            ``EarlyStopping``).
        min_fraction: share of ``trainer.max_epochs`` (read when deciding: a time budget changes it) that
            must be done before stopping (``stop`` only).
        on_plateau: ``"stop"`` or ``"decay"``.
        decay_fraction: the annealing's length as a share of the epochs done (``decay``).
    """

    def __init__(
        self,
        monitor: str,
        patience: int,
        window: int = 3,
        min_fraction: float = 0.0,
        on_plateau: str = "stop",
        decay_fraction: float = 0.25,
    ) -> None:
        if on_plateau not in ("stop", "decay"):
            raise ValueError(f"on_plateau must be 'stop' or 'decay', got {on_plateau!r}")
        self.monitor = monitor
        self.plateau = Plateau(patience, window)
        self.min_fraction = min_fraction
        self.on_plateau = on_plateau
        self.decay_fraction = decay_fraction
        self.stopped_epoch: int | None = None
        self.decay_epoch: int | None = None  # the epoch (from 1) after which the annealing began
        self.decay_end: int | None = None  # the epoch it ends the run with

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.decay_end is not None:  # resumed while annealing: the shortened run, not the config's
            trainer.fit_loop.max_epochs = self.decay_end

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        exhausted = self.plateau.update(float(trainer.callback_metrics[self.monitor]))
        done = trainer.current_epoch + 1
        planned = trainer.max_epochs or done
        if self.on_plateau == "decay":
            # Metrics are synced across ranks already; agreeing on the decision keeps DDP ranks in step.
            if trainer.strategy.reduce_boolean_decision(exhausted, all=False):
                self._anneal(trainer, pl_module, done, planned)
            return
        stop = exhausted and done >= self.min_fraction * planned
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch

    def _anneal(self, trainer: L.Trainer, module: L.LightningModule, done: int, planned: int) -> None:
        """End the run ``decay_fraction`` x ``done`` epochs from now, the lr annealed to its floor."""
        schedule = getattr(module, "lr_schedule", None)
        if self.decay_epoch is not None or not isinstance(schedule, LRSchedule):
            return
        step = trainer.global_step
        if step < schedule.warmup:
            return  # still warming up: a plateau there says nothing about the rate
        end = done + max(1, math.ceil(self.decay_fraction * done))
        if end >= planned:
            return  # the planned decay ends sooner anyway
        steps_per_epoch = max(1, step // done)
        schedule.replan(step, end * steps_per_epoch, schedule.warmup)
        trainer.fit_loop.max_epochs = end
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, TimeBudget):
                callback.cap(end)  # it may still shorten the run (slower epochs), never lengthen it
        self.decay_epoch, self.decay_end = done, end
        log.info(
            "validation plateau after epoch %d: annealing the learning rate to its floor by epoch %d "
            "(was %d)",
            done,
            end,
            planned,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "plateau": self.plateau.state_dict(),
            "stopped_epoch": self.stopped_epoch,
            "decay_epoch": self.decay_epoch,
            "decay_end": self.decay_end,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.plateau.load_state_dict(state_dict.get("plateau", {}))
        self.stopped_epoch = state_dict.get("stopped_epoch")
        self.decay_epoch = state_dict.get("decay_epoch")
        self.decay_end = state_dict.get("decay_end")
