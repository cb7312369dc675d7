"""The time budget on a fake clock: real epochs, a known cost per batch, the schedule ends inside it."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as L
import torch

import recsys.training.fit as fit_module
from recsys.training.budget import RESERVE_SHARE, TimeBudget, epochs_that_fit
from recsys.training.fit import fit
from tests.training.helpers import planted_rule_log, prepared, tiny_config


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Costs(L.Callback):
    """Advances the fake clock: ``train_s(epoch)`` per training batch, ``val_s`` per validation batch;
    records the learning rate of every optimiser step."""

    def __init__(self, clock: FakeClock, train_s, val_s: float) -> None:  # type: ignore[no-untyped-def]
        self.clock, self.train_s, self.val_s = clock, train_s, val_s
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.clock.now += self.train_s(trainer.current_epoch)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # type: ignore[no-untyped-def]
        self.clock.now += self.val_s


def test_epochs_that_fit_by_hand() -> None:
    budget = 100.0 / (1 - RESERVE_SHARE)  # 100 s usable
    assert epochs_that_fit(budget, elapsed_s=10.0, epochs_done=1, epoch_s=10.0) == 10
    assert epochs_that_fit(budget, elapsed_s=10.0, epochs_done=1, epoch_s=9.9) == 10
    assert epochs_that_fit(budget, elapsed_s=95.0, epochs_done=9, epoch_s=10.0) == 9  # none more fits
    assert epochs_that_fit(budget, elapsed_s=120.0, epochs_done=9, epoch_s=10.0) == 9


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_s, **overrides: object):  # type: ignore[no-untyped-def]
    clock = FakeClock()
    monkeypatch.setattr(fit_module, "TimeBudget", partial(TimeBudget, clock=clock))
    costs = Costs(clock, train_s, val_s=0.5)
    source = planted_rule_log(tmp_path / "log.csv", n_users=40)  # 2 training batches, 1 validation batch
    sets = {
        "train.max_epochs": None,
        "train.time_budget_minutes": 1.0,
        "train.schedule.kind": "cosine",
        "train.schedule.warmup_fraction": 0.1,
        "train.schedule.min_lr_ratio": 0.1,
        **overrides,
    }
    cfg = tiny_config(tmp_path, source, **{k: "null" if v is None else v for k, v in sets.items()})
    start = clock.now
    result = fit(cfg, prepared(cfg), callbacks=[costs], write_bundle=False)
    return result, costs, clock.now - start, cfg


def _assert_schedule_completed(result, costs: Costs, lr: float, floor: float) -> None:  # type: ignore[no-untyped-def]
    schedule = result.module.lr_schedule
    assert result.module.global_step == schedule.total == result.derived["train.total_steps"]
    assert schedule(schedule.total) == pytest.approx(floor)  # the decay reached its floor: not cut off
    assert schedule.progress(schedule.total - 1) > 0.9
    assert max(costs.lrs) == pytest.approx(lr)  # and the warm-up reached the peak
    assert costs.lrs[-2] > costs.lrs[-1] > floor * lr * 0.99  # the last epoch still decays: none wasted


def test_the_schedule_is_fitted_to_the_budget_and_ends_inside_it(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result, costs, spent, cfg = _run(tmp_path, monkeypatch, lambda epoch: 1.0)
    # One epoch = 2 batches x 1 s + 1 validation batch x 0.5 s = 2.5 s; 59.4 s usable of 60.
    assert result.derived["train.first_epoch_seconds"] == pytest.approx(2.5)
    assert result.epochs == result.derived["train.epochs"] == 23 == 1 + int((59.4 - 2.5) // 2.5)
    assert spent == pytest.approx(23 * 2.5) and spent <= 60.0
    assert result.derived["train.warmup_steps"] == round(0.1 * 46)
    assert result.derived["train.replans"] == 0
    _assert_schedule_completed(result, costs, cfg.train.optimizer.lr, floor=0.1)
    assert not result.stopped_early
    # The plan is in the last checkpoint, for --resume.
    last = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    (state,) = [v for k, v in last["callbacks"].items() if "TimeBudget" in k]
    assert state["planned_epochs"] == 23
    assert last["lr_schedulers"][0]["lr_lambdas"][0]["total"] == 46


def test_slower_epochs_shorten_the_schedule_which_still_completes(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # From epoch 6 on a batch costs 3 s (another job took the cores): 6.5 s an epoch instead of 2.5.
    result, costs, spent, cfg = _run(tmp_path, monkeypatch, lambda epoch: 1.0 if epoch < 5 else 3.0)
    assert spent <= 60.0
    assert result.epochs == result.derived["train.epochs"] == 12  # 6 done in 19 s, then 6 of 6.5 s
    assert result.derived["train.replans"] >= 1
    _assert_schedule_completed(result, costs, cfg.train.optimizer.lr, floor=0.1)
    steps = [b - a for a, b in itertools.pairwise(costs.lrs)]
    assert max(abs(s) for s in steps) < 0.5 * cfg.train.optimizer.lr  # re-planned without a jump


def test_a_first_epoch_slowed_by_setup_is_corrected_early(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # 6.5 s for the first epoch (one-off costs), 2.5 s after: 9 epochs planned, then 13 and 15 while the
    # slow epoch is one of the (up to) three measured, 22 once it has left them; then no change.
    result, costs, spent, cfg = _run(tmp_path, monkeypatch, lambda epoch: 3.0 if epoch == 0 else 1.0)
    assert result.derived["train.first_epoch_seconds"] == pytest.approx(6.5)
    assert result.epochs == result.derived["train.epochs"] == 22 and result.derived["train.replans"] == 3
    assert spent == pytest.approx(6.5 + 21 * 2.5) and spent <= 60.0
    _assert_schedule_completed(result, costs, cfg.train.optimizer.lr, floor=0.1)


def test_no_longer_schedule_once_half_of_it_is_done(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Epochs get 5x faster after epoch 12 of 23: more would fit, but the decay is past half-way.
    result, costs, spent, cfg = _run(tmp_path, monkeypatch, lambda epoch: 1.0 if epoch < 12 else 0.2)
    assert result.epochs == 23 and result.derived["train.replans"] == 0 and spent < 60.0
    _assert_schedule_completed(result, costs, cfg.train.optimizer.lr, floor=0.1)


def test_max_epochs_bounds_the_fitted_schedule(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result, costs, spent, cfg = _run(tmp_path, monkeypatch, lambda epoch: 1.0, **{"train.max_epochs": 8})
    assert result.epochs == result.derived["train.epochs"] == 8 and spent == pytest.approx(20.0)
    _assert_schedule_completed(result, costs, cfg.train.optimizer.lr, floor=0.1)


class _Crash(L.Callback):
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 5:
            raise RuntimeError("power cut")


def test_a_resumed_run_keeps_the_plan_and_the_time_spent(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock()
    monkeypatch.setattr(fit_module, "TimeBudget", partial(TimeBudget, clock=clock))
    costs = Costs(clock, lambda epoch: 1.0, val_s=0.5)
    source = planted_rule_log(tmp_path / "log.csv", n_users=40)
    sets = {"train.max_epochs": "null", "train.time_budget_minutes": 1.0, "train.schedule.kind": "cosine"}
    cfg = tiny_config(tmp_path, source, **sets)
    data = prepared(cfg)
    with pytest.raises(RuntimeError, match="power cut"):
        fit(cfg, data, callbacks=[costs, _Crash()], write_bundle=False)
    clock.now += 3600.0  # an hour passes before the restart: not training time
    result = fit(cfg, data, resume=True, callbacks=[costs], write_bundle=False)
    assert result.epochs == result.derived["train.epochs"] == 23  # the plan made in the first session
    assert result.module.global_step == result.module.lr_schedule.total == 46
    assert result.module.lr_schedule(46) == pytest.approx(cfg.train.schedule.min_lr_ratio)  # at its floor
