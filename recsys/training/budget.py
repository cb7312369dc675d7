"""``train.time_budget_minutes``: fit the whole schedule into the budget, on whatever machine this is.

After the first epoch (training, validation and setup: everything the budget pays for) the callback
knows what an epoch costs here and sets the run's length: as many epochs as fit in what is left, the
warm-up (``schedule.warmup_fraction`` of the new length, or ``warmup_steps``) and the decay re-planned to
end on the last step of the last epoch (:meth:`recsys.training.schedule.LRSchedule.replan`, no jump in the
learning rate). After every later epoch it checks again with the epochs measured since (start to start,
so checkpoint writes count) and shortens the schedule if they got slower, or, in its first half,
lengthens it if they got clearly faster (a first epoch slowed by one-off costs); the decay always ends at
its floor on the last step, it is never cut off mid-way.

The clock is injectable so that a test can run real epochs on a fake clock.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from statistics import fmean
from typing import Any

import pytorch_lightning as L

from recsys.config import ScheduleConfig
from recsys.training.schedule import LRSchedule, warmup_steps

__all__ = ["RESERVE_SHARE", "TimeBudget", "epochs_that_fit"]

log = logging.getLogger("recsys.train")

RESERVE_SHARE = 0.01
"""Share of the budget kept back for the last checkpoint, loading the best one and the bundle."""
_RECENT = 3
"""Completed epochs averaged for the cost estimate (more when validation is less frequent)."""
_GROW_SHARE = 0.05
"""A longer schedule is adopted only when at least this share (and one epoch) more fits: no dithering."""


def epochs_that_fit(budget_s: float, elapsed_s: float, epochs_done: int, epoch_s: float) -> int:
    """Epochs in all when ``epochs_done`` took ``elapsed_s`` and each further one costs ``epoch_s``."""
    left = budget_s * (1.0 - RESERVE_SHARE) - elapsed_s
    return epochs_done + max(0, math.floor(left / max(epoch_s, 1e-9)))


class TimeBudget(L.Callback):
    """Sets ``trainer.fit_loop.max_epochs`` and re-plans the module's :class:`LRSchedule` to fit a budget.

    Args:
        minutes: the budget, counted from this object's creation (just before ``Trainer.fit``).
        steps_per_epoch: optimiser steps per epoch on each rank.
        schedule: the schedule config (kind, warm-up share or steps).
        max_epochs: an upper bound on the fitted length, or None.
        clock: seconds, monotonic (``time.perf_counter``; a test passes a fake one).
    """

    def __init__(
        self,
        minutes: float,
        steps_per_epoch: int,
        schedule: ScheduleConfig,
        max_epochs: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.budget_s = minutes * 60.0
        self.steps_per_epoch = steps_per_epoch
        self.schedule = schedule
        self.max_epochs = max_epochs
        self.clock = clock
        self._t0 = clock()
        self._spent_before = 0.0  # seconds of earlier sessions of a resumed run
        self._epoch_start: float | None = None
        self.epoch_costs: list[float] = []  # start-to-start seconds of each completed epoch
        self.first_epoch_s: float | None = None
        self.planned_epochs: int | None = None
        self.warmup: int | None = None
        self.replans = 0
        self._last_estimate = 0.0

    def elapsed(self) -> float:
        return self._spent_before + self.clock() - self._t0

    # -- the plan -----------------------------------------------------------------------------------
    def _estimate(self, now: float, val_every: int) -> float:
        """What the next epoch will cost: the larger of the current epoch so far and the mean of the
        last completed ones (over a whole validation period), erring long."""
        current = now - (self._epoch_start if self._epoch_start is not None else self._t0)
        recent = self.epoch_costs[-max(_RECENT, val_every) :]
        return max(current, fmean(recent)) if recent else current

    def _decide(self, epochs_done: int, estimate: float) -> int | None:
        """The new length, or None to keep the current plan."""
        fits = epochs_that_fit(self.budget_s, self.elapsed(), epochs_done, estimate)
        if self.max_epochs is not None:
            fits = min(fits, self.max_epochs)
        fits = max(fits, epochs_done)
        planned = self.planned_epochs
        if planned is None or fits < planned:
            return fits
        # Longer only in the first half: later the decay is well under way, and lengthening it would
        # only add epochs at a low learning rate (at the very end, at its floor).
        early = epochs_done < planned / 2
        if early and fits >= planned + max(1, math.ceil(_GROW_SHARE * planned)):
            return fits
        return None

    def _apply(self, trainer: L.Trainer, module: L.LightningModule, epochs: int) -> None:
        total = epochs * self.steps_per_epoch
        self.warmup = warmup_steps(self.schedule, total)
        schedule = getattr(module, "lr_schedule", None)
        if isinstance(schedule, LRSchedule):
            schedule.replan(trainer.global_step, total, self.warmup)
        first = self.planned_epochs is None
        self.planned_epochs = epochs
        trainer.fit_loop.max_epochs = epochs
        if not first:
            self.replans += 1
        done = trainer.current_epoch + 1
        if epochs <= done and first:
            log.warning(
                "time budget %.1f min: the first epoch took %.1f s, no second one fits; stopping",
                self.budget_s / 60,
                self.first_epoch_s or 0.0,
            )
        else:
            log.info(
                "time budget %.1f min: %s %d epochs (%.1f s each), warm-up %d steps, decay to step %d",
                self.budget_s / 60,
                "planned" if first else "re-planned to",
                epochs,
                self._last_estimate,
                self.warmup,
                total,
            )

    def cap(self, epochs: int) -> None:
        """Never plan more than ``epochs`` from now on, and take it as the plan (the schedule was
        re-planned to end there by the caller: on_plateau decay)."""
        self.max_epochs = epochs if self.max_epochs is None else min(self.max_epochs, epochs)
        self.planned_epochs = self.max_epochs

    # -- hooks --------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.planned_epochs is not None:  # resumed: the plan (and the schedule) came from the checkpoint
            trainer.fit_loop.max_epochs = self.planned_epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = self.clock()
        if self._epoch_start is not None:
            self.epoch_costs.append(now - self._epoch_start)
        self._epoch_start = now

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after validation (Lightning validates inside the epoch) and before the checkpoints are
        # written, so the plan made here is in the checkpoint of this epoch.
        now = self.clock()
        estimate = self._estimate(now, trainer.check_val_every_n_epoch or 1)
        if self.first_epoch_s is None:
            self.first_epoch_s = now - self._t0
        self._last_estimate = estimate
        decision = self._decide(trainer.current_epoch + 1, estimate)
        # Every rank must train the same number of epochs: rank 0's clock decides.
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision is not None and decision != self.planned_epochs:
            self._apply(trainer, pl_module, decision)

    # -- what is logged and checkpointed ------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The derived values: epochs, warm-up and decay steps, the measured first epoch, re-plans."""
        total = (self.planned_epochs or 0) * self.steps_per_epoch
        return {
            "time_budget_minutes": self.budget_s / 60,
            "epochs": self.planned_epochs,
            "warmup_steps": self.warmup,
            "total_steps": total,
            "first_epoch_seconds": round(self.first_epoch_s, 3) if self.first_epoch_s else None,
            "replans": self.replans,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "spent_s": self.elapsed(),
            "epoch_costs": list(self.epoch_costs),
            "first_epoch_s": self.first_epoch_s,
            "planned_epochs": self.planned_epochs,
            "warmup": self.warmup,
            "replans": self.replans,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._spent_before = float(state_dict.get("spent_s", 0.0))
        self._t0 = self.clock()
        self.epoch_costs = list(state_dict.get("epoch_costs", []))
        self.first_epoch_s = state_dict.get("first_epoch_s")
        self.planned_epochs = state_dict.get("planned_epochs")
        self.warmup = state_dict.get("warmup")
        self.replans = int(state_dict.get("replans", 0))
