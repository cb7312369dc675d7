"""The learning-rate schedule: linear warm-up, then constant, linear or cosine decay, re-plannable mid-run.

A time budget (:mod:`recsys.training.budget`) learns the run's length only after the first epoch, and
re-fits it if epochs get slower; :meth:`LRSchedule.replan` changes the warm-up and decay lengths from the
current step on without a jump in the learning rate: the warm-up continues from the current multiplier,
and a decay continues from the point of the new curve that has the current multiplier, so the schedule
always ends at ``min_ratio`` on its last step. The state is plain numbers in ``__dict__``, which
``torch.optim.lr_scheduler.LambdaLR`` saves in checkpoints (``--resume`` gets the re-planned schedule).
"""

from __future__ import annotations

import math

from recsys.config import ScheduleConfig

__all__ = ["DEFAULT_WARMUP_FRACTION", "LRSchedule", "warmup_steps"]

DEFAULT_WARMUP_FRACTION = 0.05
"""The warm-up when a config sets neither ``warmup_fraction`` nor ``warmup_steps``."""


def warmup_steps(cfg: ScheduleConfig, total: int) -> int:
    """Warm-up length of a ``total``-step schedule: ``warmup_fraction`` of it, else ``warmup_steps``,
    else :data:`DEFAULT_WARMUP_FRACTION` of it."""
    if cfg.warmup_fraction is not None:
        return round(cfg.warmup_fraction * total)
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    return round(DEFAULT_WARMUP_FRACTION * total)


class LRSchedule:
    """Multiplier on the peak learning rate at optimiser step ``step`` (a ``LambdaLR`` lambda)."""

    def __init__(self, kind: str, warmup: int, total: int, min_ratio: float) -> None:
        self.kind = kind
        self.warmup = warmup
        self.total = max(1, total)
        self.min_ratio = min_ratio
        # Set by replan: the warm-up resumes from (step, multiplier); the decay from (step, progress).
        self.warm_from: tuple[int, float] | None = None
        self.decay_from: tuple[int, float] | None = None

    @classmethod
    def from_config(cls, cfg: ScheduleConfig, total: int) -> LRSchedule:
        return cls(cfg.kind, warmup_steps(cfg, total), total, cfg.min_lr_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            if self.warm_from is None:
                return (step + 1) / self.warmup
            start, value = self.warm_from
            return value + (1.0 - value) * (step - start) / max(1, self.warmup - start)
        if self.kind == "constant":
            return 1.0
        return self._decay(self.progress(step))

    def progress(self, step: int) -> float:
        """Share of the decay done at ``step`` (0 at the end of warm-up, 1 on the last step)."""
        start, done = self.decay_from if self.decay_from is not None else (self.warmup, 0.0)
        return min(1.0, max(0.0, done + (1.0 - done) * (step - start) / max(1, self.total - start)))

    def _decay(self, progress: float) -> float:
        r = self.min_ratio
        if self.kind == "linear":
            return r + (1.0 - r) * (1.0 - progress)
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _progress_of(self, value: float) -> float:
        """The decay progress whose multiplier is ``value`` (the inverse of the decay curve)."""
        r = self.min_ratio
        share = 1.0 if r >= 1.0 else min(1.0, max(0.0, (value - r) / (1.0 - r)))
        if self.kind == "linear":
            return 1.0 - share
        return math.acos(2.0 * share - 1.0) / math.pi

    def replan(self, step: int, total: int, warmup: int) -> None:
        """From ``step`` on: ``total`` steps in all, warm-up until ``warmup``; no jump at ``step``.

        If the new warm-up has already passed while the old one had not reached the peak (a first epoch
        longer than the fitted warm-up), the warm-up still ends at the peak: at the old pace, within the
        first half of the steps left.
        """
        value = self(step)
        warming = step < self.warmup
        self.total = max(total, step + 1)
        warmup = min(warmup, self.total)
        if warming and warmup <= step:
            warmup = min(self.warmup, step + max(1, (self.total - step) // 2))
        self.warmup = warmup
        if step < self.warmup:
            self.warm_from, self.decay_from = (step, value), None
        else:
            self.warm_from, self.decay_from = None, (step, self._progress_of(value))
