"""DivergenceGuard on hand-made losses, check_finite_weights, and a real run with a far too high lr."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from recsys.training.divergence import (
    EXPLODING_FACTOR,
    DivergenceGuard,
    TrainingDivergedError,
    check_finite_weights,
)
from recsys.training.fit import fit
from tests.training.helpers import planted_rule_log, prepared, tiny_config


class _Strategy:
    """The one strategy call the guard makes; records the decisions it was asked to reduce."""

    def __init__(self) -> None:
        self.decisions: list[bool] = []

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        assert all is False  # any rank's divergence stops every rank
        self.decisions.append(decision)
        return decision


def _trainer() -> Any:
    return SimpleNamespace(strategy=_Strategy(), current_epoch=0, global_step=0)


def _feed(guard: DivergenceGuard, trainer: Any, losses: list[float]) -> None:
    for step, loss in enumerate(losses):
        trainer.global_step = step
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, step)  # type: ignore[arg-type]


def test_healthy_losses_pass_and_every_step_is_decided() -> None:
    guard, trainer = DivergenceGuard(), _trainer()
    _feed(guard, trainer, [3.7, 3.9, 3.2, 0.5, 3.7 * EXPLODING_FACTOR * 0.99])
    assert guard.first_loss == pytest.approx(3.7)
    assert trainer.strategy.decisions == [False] * 5


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (float("nan"), r"at epoch 1, step 2 \(loss nan\)"),
        (float("inf"), r"at epoch 1, step 2 \(loss inf\)"),
        (-float("inf"), r"at epoch 1, step 2 \(loss -inf\)"),
        (2.0 * EXPLODING_FACTOR + 0.01, r"at epoch 1, step 2 \(loss 20\.01, 10x the first step's\)"),
    ],
)
def test_non_finite_or_exploding_loss_raises(bad: float, message: str) -> None:
    guard, trainer = DivergenceGuard(), _trainer()
    with pytest.raises(TrainingDivergedError, match=message):
        _feed(guard, trainer, [2.0, 1.5, bad])


def test_reference_survives_a_resume_through_the_checkpoint_state() -> None:
    guard = DivergenceGuard()
    _feed(guard, _trainer(), [2.0, 1.0])
    resumed = DivergenceGuard()
    resumed.load_state_dict(guard.state_dict())
    # The resumed run's first step (0.3) is not the reference: 21 is over 10x the original 2.0.
    with pytest.raises(TrainingDivergedError, match=r"10\.5x"):
        _feed(resumed, _trainer(), [0.3, 21.0])


def test_check_finite_weights_names_the_parameter() -> None:
    layer = torch.nn.Linear(2, 2)
    check_finite_weights(layer)
    with torch.no_grad():
        layer.bias[1] = float("nan")
    with pytest.raises(TrainingDivergedError, match="parameter 'bias'"):
        check_finite_weights(layer)


def test_a_far_too_high_learning_rate_stops_fit_and_writes_no_bundle(tmp_path: Path) -> None:
    source = planted_rule_log(tmp_path / "log.csv", n_users=60)
    cfg = tiny_config(tmp_path, source, **{"train.max_epochs": 4, "train.optimizer.lr": 100.0})
    dataset = prepared(cfg)
    with pytest.raises(TrainingDivergedError, match=r"diverged at epoch \d, step \d+ .*lr \(now 100\)"):
        fit(cfg, dataset)
    assert not (tmp_path / "run" / "model").exists()
