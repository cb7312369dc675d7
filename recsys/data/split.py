"""Train / validation / test splits of a cleaned, encoded, chronologically sorted frame.

Both splits tag every interaction with ``split`` (TRAIN, VALIDATION or TEST) and never move or drop one.
They are leak-free by construction: an event tagged VALIDATION or TEST is never part of the training
input, and the test input is train + validation events only (see :class:`~recsys.data.prepared.
PreparedDataset.history`).

- **Leave-one-out**: a user's last event is the test target, the second-to-last the validation target,
  the rest are training events. Users with one event have a test target only; users with two have
  validation + test targets and no training events. They are kept (their targets are still evaluated,
  from an empty or one-item history) and counted in the report as ``users_without_train``.
- **Temporal** (global): events at/after ``test_cutoff`` are test targets, those at/after
  ``validation_cutoff`` (and before the test cutoff) validation targets, the rest training events. A
  cutoff in (0, 1) is a quantile of all cleaned timestamps (``lower`` interpolation, so it is an actual
  timestamp). Users whose events all fall after a cutoff have no training events; they are kept and
  counted the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from recsys.config import ConfigError, SplitConfig
from recsys.data.columns import SPLIT, TEST, TIMESTAMP, TRAIN, USER, VALIDATION

__all__ = ["SplitSummary", "assign_split", "leave_one_out", "resolve_cutoff", "temporal"]


@dataclass(frozen=True)
class SplitSummary:
    """Counts of a split, for the manifest and the report."""

    kind: str
    test_cutoff: float | None
    validation_cutoff: float | None
    train_rows: int
    validation_rows: int
    test_rows: int
    users_with_train: int
    users_without_train: int
    users_with_validation: int
    users_with_test: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def leave_one_out(frame: pl.DataFrame) -> pl.DataFrame:
    """Tag the last event of each user TEST, the second-to-last VALIDATION, the rest TRAIN.

    ``frame`` must be sorted by (user, time): then "last of a user" is "the next row has another user",
    which needs no group-by.
    """
    user = pl.col(USER)
    is_last = (user != user.shift(-1)).fill_null(True)
    is_second_last = (user != user.shift(-2)).fill_null(True)
    split = pl.when(is_last).then(TEST).when(is_second_last).then(VALIDATION).otherwise(TRAIN)
    return frame.lazy().with_columns(split.cast(pl.Int8).alias(SPLIT)).collect()


def resolve_cutoff(cutoff: float, timestamps: pl.Series) -> float:
    """An absolute cutoff as is; a value in (0, 1) as that quantile of ``timestamps``."""
    if 0.0 < cutoff < 1.0:
        value = timestamps.quantile(cutoff, interpolation="lower")
        return float(value) if value is not None else 0.0
    return float(cutoff)


def temporal(frame: pl.DataFrame, test_cutoff: float, validation_cutoff: float | None) -> pl.DataFrame:
    """Tag events by global time: >= test cutoff TEST, >= validation cutoff VALIDATION, else TRAIN.

    Cutoffs are absolute here (see :func:`resolve_cutoff`).
    """
    ts = pl.col(TIMESTAMP)
    # Without a validation cutoff, nothing is at/after +inf: the middle branch never fires.
    middle = validation_cutoff if validation_cutoff is not None else float("inf")
    split = pl.when(ts >= test_cutoff).then(TEST).when(ts >= middle).then(VALIDATION).otherwise(TRAIN)
    return frame.lazy().with_columns(split.cast(pl.Int8).alias(SPLIT)).collect()


def _users_with(users: np.ndarray, tags: np.ndarray, code: int, n_users: int) -> int:
    return int(np.count_nonzero(np.bincount(users[tags == code], minlength=n_users)))


def assign_split(frame: pl.DataFrame, cfg: SplitConfig, n_users: int) -> tuple[pl.DataFrame, SplitSummary]:
    """Add the ``split`` column as configured and summarise it.

    Args:
        frame: cleaned interactions, user indices 0..n_users-1, sorted by (user, time, row).
        cfg: the split configuration.
        n_users: number of users.
    """
    test_cutoff: float | None = None
    validation_cutoff: float | None = None
    if cfg.kind == "leave_one_out":
        tagged = leave_one_out(frame)
    else:
        if cfg.test_cutoff is None:
            raise ConfigError("split.kind=temporal needs split.test_cutoff")
        test_cutoff = resolve_cutoff(cfg.test_cutoff, frame[TIMESTAMP])
        if cfg.validation_cutoff is not None:
            validation_cutoff = resolve_cutoff(cfg.validation_cutoff, frame[TIMESTAMP])
            if validation_cutoff > test_cutoff:
                raise ConfigError(
                    f"split.validation_cutoff resolves to {validation_cutoff}, after the test cutoff "
                    f"{test_cutoff}"
                )
        tagged = temporal(frame, test_cutoff, validation_cutoff)
    users = tagged[USER].to_numpy()
    tags = tagged[SPLIT].to_numpy()
    rows = np.bincount(tags, minlength=3)
    with_train = _users_with(users, tags, TRAIN, n_users)
    summary = SplitSummary(
        kind=cfg.kind,
        test_cutoff=test_cutoff,
        validation_cutoff=validation_cutoff,
        train_rows=int(rows[TRAIN]),
        validation_rows=int(rows[VALIDATION]),
        test_rows=int(rows[TEST]),
        users_with_train=with_train,
        users_without_train=n_users - with_train,
        users_with_validation=_users_with(users, tags, VALIDATION, n_users),
        users_with_test=_users_with(users, tags, TEST, n_users),
    )
    return tagged, summary
