"""The learning-rate schedule: the published shapes, and re-planning without a jump."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from recsys.config import ScheduleConfig
from recsys.training.schedule import LRSchedule, warmup_steps


def test_warmup_then_cosine_by_hand() -> None:
    s = LRSchedule("cosine", warmup=4, total=12, min_ratio=0.0)
    assert [s(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s(4) == 1.0  # decay starts at the peak
    assert s(8) == pytest.approx(0.5)  # half-way through the 8 decay steps
    assert s(12) == pytest.approx(0.0)


def test_linear_and_constant_and_floor() -> None:
    linear = LRSchedule("linear", warmup=0, total=10, min_ratio=0.1)
    assert linear(0) == 1.0 and linear(5) == pytest.approx(0.55) and linear(10) == pytest.approx(0.1)
    constant = LRSchedule("constant", warmup=2, total=10, min_ratio=0.1)
    assert [constant(i) for i in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]


def test_warmup_fraction_replaces_warmup_steps() -> None:
    assert warmup_steps(ScheduleConfig(warmup_steps=7), 1000) == 7
    assert warmup_steps(ScheduleConfig(warmup_steps=7, warmup_fraction=0.05), 1000) == 50


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize(("at", "total", "warmup"), [(30, 60, 10), (30, 200, 10), (5, 80, 20), (50, 51, 5)])
def test_replan_is_continuous_and_ends_at_the_floor(kind: str, at: int, total: int, warmup: int) -> None:
    s = LRSchedule(kind, warmup=10, total=100, min_ratio=0.05)
    before = s(at)
    s.replan(at, total, warmup)
    assert s(at) == pytest.approx(before, abs=1e-12)
    assert s(total) == pytest.approx(0.05)
    values = [s(i) for i in range(at, total + 1)]
    peak = values.index(max(values))
    # Up to the peak (a warm-up that continues), then never up again...
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(values[peak:]))
    if total - at >= 20:  # ...in small steps where there is room (a plan ending now drops at once)
        assert max(abs(b - a) for a, b in itertools.pairwise(values)) <= 0.1 + 1e-9


def test_replan_during_warmup_continues_to_the_peak() -> None:
    s = LRSchedule("cosine", warmup=100, total=1000, min_ratio=0.0)
    s.replan(20, 400, 40)  # a shorter run: warm-up now ends at step 40
    assert s(20) == pytest.approx(0.21)
    assert s(30) == pytest.approx(0.21 + 0.79 * 10 / 20)
    assert s(40) == 1.0 and s(400) == pytest.approx(0.0)


def test_a_warmup_passed_by_the_new_plan_still_reaches_the_peak() -> None:
    # The first epoch (20 steps) was longer than the whole fitted warm-up (5 steps).
    s = LRSchedule("cosine", warmup=50, total=500, min_ratio=0.0)
    s.replan(20, 100, 5)
    assert max(s(i) for i in range(20, 101)) == 1.0
    assert s.warmup <= 20 + 40 and s(100) == pytest.approx(0.0)


def test_lambdalr_checkpoints_the_replanned_schedule() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    s = LRSchedule("cosine", warmup=0, total=100, min_ratio=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(params, lr=1.0), s)
    s.replan(0, 40, 4)
    state = sched.state_dict()
    fresh = LRSchedule("cosine", warmup=0, total=100, min_ratio=0.0)
    again = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(params, lr=1.0), fresh)
    again.load_state_dict(state)
    assert fresh.total == 40 and fresh.warmup == 4
    assert all(math.isclose(fresh(i), s(i)) for i in range(41))
