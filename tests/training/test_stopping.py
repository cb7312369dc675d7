"""Early stopping on the moving median: a single noisy validation cannot trigger it."""

from __future__ import annotations

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
