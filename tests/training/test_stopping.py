"""Early stopping on the moving median: a single noisy validation cannot trigger it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from recsys.training.stopping import Plateau, SmoothedEarlyStopping

# A slowly rising curve with one lucky validation early on (the demo's epoch-9 spike, in miniature).
SPIKED = [0.10, 0.30, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.17, 0.18]


def _first_stop(plateau: Plateau, values: list[float]) -> int | None:
    for i, value in enumerate(values):
        if plateau.update(value):
            return i
    return None


def test_raw_metric_stops_on_the_spike_the_median_does_not() -> None:
    assert _first_stop(Plateau(patience=3, window=1), SPIKED) == 4  # what Lightning's EarlyStopping does
    assert _first_stop(Plateau(patience=3, window=3), SPIKED) is None


def test_a_real_plateau_still_stops_after_patience() -> None:
    # Medians from index 2 (the window is full): 0.3, 0.4, then three validations without a gain.
    flat = [0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4]
    assert _first_stop(Plateau(patience=3, window=3), flat) == 6


def test_state_round_trip() -> None:
    a = Plateau(patience=3, window=3)
    for value in SPIKED[:5]:
        a.update(value)
    b = Plateau(patience=3, window=3)
    b.load_state_dict(a.state_dict())
    assert [a.update(v) for v in SPIKED[5:]] == [b.update(v) for v in SPIKED[5:]]


def _trainer(epoch: int, max_epochs: int, value: float) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=False,
        callback_metrics={"val": torch.tensor(value)},
        current_epoch=epoch,
        max_epochs=max_epochs,
        should_stop=False,
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision),
    )


@pytest.mark.parametrize(("min_fraction", "stopped"), [(0.0, 3), (0.5, 9)])
def test_no_stop_before_the_minimum_share_of_the_schedule(min_fraction: float, stopped: int) -> None:
    callback = SmoothedEarlyStopping("val", patience=2, window=1, min_fraction=min_fraction)
    first = None
    for epoch in range(20):
        trainer = _trainer(epoch, 20, 0.5 if epoch == 1 else 0.4)  # best at epoch 1, flat after
        callback.on_validation_end(trainer, None)  # type: ignore[arg-type]
        if trainer.should_stop:
            first = epoch
            break
    assert first == stopped and callback.stopped_epoch == stopped


def test_the_share_is_of_the_current_schedule_length() -> None:
    """A time budget lowers ``trainer.max_epochs`` mid-run: the share follows it."""
    callback = SmoothedEarlyStopping("val", patience=1, window=1, min_fraction=0.5)
    callback.on_validation_end(_trainer(0, 100, 0.5), None)  # type: ignore[arg-type]
    late = _trainer(5, 100, 0.4)
    callback.on_validation_end(late, None)  # type: ignore[arg-type]
    assert not late.should_stop  # 6 of 100 epochs
    fitted = _trainer(6, 12, 0.4)
    callback.on_validation_end(fitted, None)  # type: ignore[arg-type]
    assert fitted.should_stop  # 7 of 12


def _decay_trainer(epoch: int, max_epochs: int, value: float, steps_per_epoch: int, budget=None):  # type: ignore[no-untyped-def]
    trainer = _trainer(epoch, max_epochs, value)
    trainer.global_step = (epoch + 1) * steps_per_epoch
    trainer.fit_loop = SimpleNamespace(max_epochs=max_epochs)
    trainer.callbacks = [budget] if budget is not None else []
    return trainer


def test_decay_on_plateau_anneals_to_the_floor_and_ends_the_run() -> None:
    from recsys.config import ScheduleConfig
    from recsys.training.budget import TimeBudget
    from recsys.training.schedule import LRSchedule

    spe, planned = 10, 100
    schedule = LRSchedule("cosine", warmup=50, total=planned * spe, min_ratio=0.02)
    module = SimpleNamespace(lr_schedule=schedule)
    budget = TimeBudget(60, spe, ScheduleConfig(), clock=lambda: 0.0)
    budget.planned_epochs = planned
    callback = SmoothedEarlyStopping("val", patience=2, window=1, min_fraction=0.9, on_plateau="decay")
    ended = None
    for epoch in range(planned):
        trainer = _decay_trainer(epoch, planned, 0.1 + 0.01 * min(epoch, 20), spe, budget)
        before = schedule(trainer.global_step)
        callback.on_validation_end(trainer, module)  # type: ignore[arg-type]
        assert not trainer.should_stop  # decay never stops the run itself
        if trainer.fit_loop.max_epochs != planned:
            ended = trainer.fit_loop.max_epochs
            assert schedule(trainer.global_step) == pytest.approx(before)  # no jump in the lr
            break
    # Rising to epoch 21 (from 1), then two flat validations: the plateau at 23; a quarter of that more.
    assert callback.decay_epoch == 23 and ended == 29 == callback.decay_end
    assert schedule(29 * spe - 1) == pytest.approx(0.02, abs=1e-3)  # the floor on the last step
    assert budget.planned_epochs == 29 and budget.max_epochs == 29  # the budget may not lengthen it


def test_decay_waits_for_the_warm_up_and_happens_once() -> None:
    from recsys.training.schedule import LRSchedule

    schedule = LRSchedule("cosine", warmup=100, total=1000, min_ratio=0.0)
    module = SimpleNamespace(lr_schedule=schedule)
    callback = SmoothedEarlyStopping("val", patience=1, window=1, on_plateau="decay")
    callback.on_validation_end(_decay_trainer(0, 100, 0.5, 10), module)  # type: ignore[arg-type]
    warming = _decay_trainer(1, 100, 0.4, 10)  # step 20 of a 100-step warm-up
    callback.on_validation_end(warming, module)  # type: ignore[arg-type]
    assert warming.fit_loop.max_epochs == 100 and callback.decay_epoch is None
    after = _decay_trainer(19, 100, 0.4, 10)
    callback.on_validation_end(after, module)  # type: ignore[arg-type]
    assert after.fit_loop.max_epochs == 25 and callback.decay_epoch == 20
    again = _decay_trainer(22, 25, 0.3, 10)
    callback.on_validation_end(again, module)  # type: ignore[arg-type]
    assert again.fit_loop.max_epochs == 25  # once only


def test_decay_mode_through_fit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The planted rule is learnt in a few epochs, then validation is flat: the run anneals and ends."""
    from recsys.training.fit import fit
    from tests.training.helpers import planted_rule_log, prepared, tiny_config

    cfg = tiny_config(
        tmp_path,
        planted_rule_log(tmp_path / "log.csv", n_users=60),
        **{
            "train.max_epochs": 60,
            "train.patience": 3,
            "train.on_plateau": "decay",
            "train.schedule.kind": "cosine",
            "train.schedule.min_lr_ratio": 0.0,
        },
    )
    result = fit(cfg, prepared(cfg), write_bundle=False)
    after = result.derived["train.plateau_decay_after_epoch"]
    assert result.epochs == after + math.ceil(after / 4) < 60  # a quarter of the epochs done
    assert result.history[-1]["lr"] < 1e-3 * cfg.train.optimizer.lr  # annealed to the floor, 0
