"""Stop a training run whose loss has diverged, before it writes a checkpoint or a bundle.

A learning rate that is far too high does not crash anything: the loss climbs to thousands, then to inf
and NaN, validation scores NaN or garbage, and without a check the run still writes, logs and registers a
model bundle. :class:`DivergenceGuard` checks every training step's loss and raises
:class:`TrainingDivergedError` at the first step whose loss is not finite or exceeds
``EXPLODING_FACTOR`` times the loss of the run's first step. Raising inside ``trainer.fit`` ends the run
before the epoch's checkpoints are saved, so ``last.ckpt`` stays the last good epoch and ``fit`` writes no
bundle. :func:`check_finite_weights` is the last line of defence, run before the bundle is written.

Why ten times the first step's loss: a freshly initialised model scores items nearly uniformly, so its
first loss is close to the loss of a blind guess (ln V for the full softmax). Training lowers the loss; a
step ten times above the blind guess means the model is confidently wrong on nearly every target, which
no healthy run reaches (measured on the planted-rule test data: lr 0.01 peaks at 1.003x the first step's
loss; lr 1 reaches 17x, lr 100 190,000x, lr 1e4 NaN). The first loss is kept in the checkpoint, so a
resumed run compares with the same reference.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as L
import torch

__all__ = ["EXPLODING_FACTOR", "DivergenceGuard", "TrainingDivergedError", "check_finite_weights"]

EXPLODING_FACTOR = 10.0
"""A step whose loss exceeds this multiple of the first step's loss has diverged (see the module doc)."""


class TrainingDivergedError(RuntimeError):
    """Training diverged (a non-finite or exploding loss, or non-finite weights); no bundle was written."""


def _advice(pl_module: L.LightningModule) -> str:
    cfg = getattr(pl_module, "cfg", None)
    if cfg is None:
        return "lower the learning rate"
    opt = cfg.train.optimizer
    clip = "" if opt.grad_clip is not None else " or set train.optimizer.grad_clip (e.g. 1.0)"
    return f"lower train.optimizer.lr (now {opt.lr:g}){clip}; no model bundle was written"


class DivergenceGuard(L.Callback):
    """Raises :class:`TrainingDivergedError` at the first step with a non-finite or exploding loss.

    Under DDP the ranks agree on the decision (one boolean all-reduce per step), so every rank raises at
    the same step and none is left waiting in a collective.
    """

    def __init__(self, factor: float = EXPLODING_FACTOR) -> None:
        self.factor = factor
        self.first_loss: float | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = float(loss.detach())
        if self.first_loss is None and math.isfinite(value):
            self.first_loss = value
        reference = self.first_loss or 0.0
        finite = math.isfinite(value)
        exploding = finite and reference > 0 and value > self.factor * reference
        diverged = not finite or exploding
        if not trainer.strategy.reduce_boolean_decision(diverged, all=False):
            return
        seen = f"loss {value:.4g}" + (f", {value / reference:.3g}x the first step's" if exploding else "")
        raise TrainingDivergedError(
            f"training diverged at epoch {trainer.current_epoch + 1}, step {trainer.global_step} ({seen}); "
            + _advice(pl_module)
        )

    def state_dict(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_loss = state_dict.get("first_loss", self.first_loss)


def check_finite_weights(module: torch.nn.Module) -> None:
    """Raise :class:`TrainingDivergedError` naming the first parameter holding a NaN or an infinity."""
    for name, param in module.named_parameters():
        if not bool(torch.isfinite(param.detach()).all()):
            raise TrainingDivergedError(
                f"training diverged: parameter {name!r} holds NaN or infinite values; "
                "lower train.optimizer.lr; no model bundle was written"
            )
