"""Splits: hand-worked leave-one-out and temporal cases, and leak-freedom as a property."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from recsys.config import ConfigError, SplitConfig
from recsys.data.columns import SPLIT, TEST, TRAIN, VALIDATION
from recsys.data.pipeline import build, prepare
from recsys.data.prepared import PreparedDataset
from tests.data.conftest import WriteFile, data_config

HEADER = "user_id,item_id,timestamp\n"


def csv(rows: Sequence[tuple[object, object, object]]) -> str:
    return HEADER + "".join(f"{u},{i},{t}\n" for u, i, t in rows)


def items_of(dataset: PreparedDataset, user: int, which: str) -> list[object]:
    """Original item ids of ``user`` in ``h:<split>`` (history) or ``t:<split>`` (targets)."""
    kind, split = which.split(":")
    seqs = dataset.history(split) if kind == "h" else dataset.targets(split)  # type: ignore[arg-type]
    return dataset.items.decode(seqs.for_user(user)).tolist()


# ------------------------------------------------------------------------------------------ leave-one-out
LOO_ROWS = [
    ("A", 1, 1),
    ("A", 2, 2),
    ("A", 3, 3),
    ("A", 4, 4),
    ("B", 5, 1),  # one event: a test target only
    ("C", 6, 1),  # two events: validation + test targets, no training events
    ("C", 7, 2),
]


def test_leave_one_out_by_hand(write_file: WriteFile, tmp_path: Path) -> None:
    path = write_file("log.csv", csv(LOO_ROWS))
    out = prepare(data_config(path, output_dir=tmp_path / "p"), plot=False)
    data = PreparedDataset.load(out.path)
    a, b, c = (int(data.users.encode(["A", "B", "C"])[0][k]) for k in range(3))
    assert items_of(data, a, "h:train") == [1, 2] and items_of(data, a, "h:validation") == [1, 2]
    assert items_of(data, a, "t:validation") == [3] and items_of(data, a, "t:test") == [4]
    assert items_of(data, a, "h:test") == [1, 2, 3]
    assert items_of(data, b, "h:train") == [] and items_of(data, b, "t:test") == [5]
    assert items_of(data, c, "h:train") == [] and items_of(data, c, "t:validation") == [6]
    assert items_of(data, c, "h:test") == [6] and items_of(data, c, "t:test") == [7]
    # Users without training events are kept (empty histories), and counted.
    assert len(data.history("train")) == 3
    assert data.targets("validation").users.tolist() == [a, c]
    split = out.report["split"]
    assert (split["users_without_train"], split["users_with_validation"], split["users_with_test"]) == (
        2,
        2,
        3,
    )
    assert (split["train_rows"], split["validation_rows"], split["test_rows"]) == (2, 2, 3)


# ------------------------------------------------------------------------------------------ temporal
TEMPORAL_ROWS = [("A", i, i) for i in range(1, 7)] + [("B", 10 + i, i) for i in (2, 6, 7, 8, 9, 10)]


def test_temporal_absolute_cutoffs(write_file: WriteFile) -> None:
    path = write_file("log.csv", csv(TEMPORAL_ROWS))
    cfg = data_config(path, split={"kind": "temporal", "test_cutoff": 8, "validation_cutoff": 6})
    built = build(cfg)
    tags = dict(zip(built.interactions["row"].to_list(), built.interactions[SPLIT].to_list(), strict=True))
    # Rows 0-5 are A at t=1..6; rows 6-11 are B at t=2,6,7,8,9,10.
    expected = [TRAIN] * 5 + [VALIDATION] + [TRAIN, VALIDATION, VALIDATION, TEST, TEST, TEST]
    assert [tags[r] for r in range(12)] == expected
    assert built.split.test_cutoff == 8 and built.split.validation_cutoff == 6


def test_temporal_quantile_cutoffs(write_file: WriteFile) -> None:
    rows = [("A", i, i) for i in range(1, 11)]
    cfg = data_config(
        write_file("log.csv", csv(rows)),
        split={"kind": "temporal", "test_cutoff": 0.8, "validation_cutoff": 0.6},
    )
    built = build(cfg)
    # Quantiles with "lower" interpolation over t = 1..10: q0.8 -> 8, q0.6 -> 6.
    assert (built.split.test_cutoff, built.split.validation_cutoff) == (8.0, 6.0)
    assert built.interactions[SPLIT].to_list() == [TRAIN] * 5 + [VALIDATION] * 2 + [TEST] * 3


def test_temporal_users_without_training_events_are_kept(write_file: WriteFile) -> None:
    rows = [("A", 1, 1), ("A", 2, 2), ("late", 3, 9)]
    built = build(data_config(write_file("log.csv", csv(rows)), split={"kind": "temporal", "test_cutoff": 5}))
    assert len(built.users) == 2
    assert built.split.users_without_train == 1 and built.split.users_with_test == 1


def test_temporal_needs_a_test_cutoff() -> None:
    with pytest.raises(ValidationError, match="test_cutoff"):
        SplitConfig(kind="temporal")
    with pytest.raises(ValidationError, match="validation_cutoff"):
        SplitConfig(kind="temporal", test_cutoff=0.5, validation_cutoff=0.9)


# ------------------------------------------------------------------------------------------ properties
@st.composite
def event_logs(draw: st.DrawFn) -> list[tuple[int, int]]:
    """(user, timestamp) per row; the item is the row number, so an item identifies its event."""
    n = draw(st.integers(min_value=1, max_value=60))
    return draw(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 30)), min_size=n, max_size=n))


def _prepare(tmp_path: Path, events: list[tuple[int, int]], split: dict[str, object]) -> PreparedDataset:
    frame = pl.DataFrame(
        {
            "user_id": [u for u, _ in events],
            "item_id": list(range(len(events))),
            "timestamp": [t for _, t in events],
        }
    )
    source = tmp_path / "log.parquet"
    frame.write_parquet(source)
    out = prepare(data_config(source, output_dir=tmp_path / "prepared", split=split), force=True, plot=False)
    return PreparedDataset.load(out.path)


def _check_leak_free(data: PreparedDataset, n_events: int) -> None:
    train = data.history("train")
    val_history = data.history("validation")
    test_history = data.history("test")
    val = data.targets("validation")
    test = data.targets("test")
    assert len(train) == len(test_history) == data.n_users
    # Counts add up: every event is exactly one of train / validation target / test target.
    assert len(train.items) + len(val.items) + len(test.items) == n_events
    assert len(test_history.items) == len(train.items) + len(val.items)
    for user in range(data.n_users):
        seen_train = set(train.for_user(user).tolist())
        seen_val = set(val_history.for_user(user).tolist())
        seen_test = set(test_history.for_user(user).tolist())
        val_targets = set(val.for_user(user).tolist())
        test_targets = set(test.for_user(user).tolist())
        assert not seen_train & (val_targets | test_targets)
        assert not seen_val & (val_targets | test_targets)
        assert not seen_test & test_targets
        assert seen_test == seen_train | val_targets


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=event_logs())
def test_leave_one_out_is_leak_free(tmp_path: Path, events: list[tuple[int, int]]) -> None:
    data = _prepare(tmp_path, events, {"kind": "leave_one_out"})
    _check_leak_free(data, len(events))
    frame = data.interactions().collect()
    for user in range(data.n_users):
        tags = frame.filter(pl.col("user") == user)["split"].to_list()
        # Chronological per user: train..., then validation (if >= 2 events), then test, last.
        expected = [TRAIN] * max(len(tags) - 2, 0) + ([VALIDATION] if len(tags) >= 2 else []) + [TEST]
        assert tags == expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=event_logs(), test_q=st.floats(0.3, 0.95), val_q=st.floats(0.05, 0.3))
def test_temporal_is_leak_free(
    tmp_path: Path, events: list[tuple[int, int]], test_q: float, val_q: float
) -> None:
    data = _prepare(tmp_path, events, {"kind": "temporal", "test_cutoff": test_q, "validation_cutoff": val_q})
    _check_leak_free(data, len(events))
    frame = data.interactions().collect()
    cut = data.manifest["split"]
    ts = frame["timestamp"].to_numpy()
    tags = frame["split"].to_numpy()
    assert np.all(ts[tags == TEST] >= cut["test_cutoff"])
    assert np.all(ts[tags != TEST] < cut["test_cutoff"])
    assert np.all(ts[tags == TRAIN] < cut["validation_cutoff"])


def test_mixed_cutoffs_checked_once_resolved(write_file: WriteFile) -> None:
    rows = [("A", i, i) for i in range(1, 11)]
    split = {"kind": "temporal", "test_cutoff": 0.5, "validation_cutoff": 9}
    with pytest.raises(ConfigError, match="after the test cutoff"):
        build(data_config(write_file("log.csv", csv(rows)), split=split))
