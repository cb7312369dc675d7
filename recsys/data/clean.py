"""Cleaning: validation with located errors, filters, chronological order, duplicates, k-core.

Each filter returns the new frame and a :class:`FilterStats` saying how many rows, users and items it
removed (for the data report). Filters run in this order (see :func:`recsys.data.pipeline.build`):
null ids -> event types -> rating threshold -> duplicates -> k-core, with the chronological sort before
the duplicate policy so that "first" and "last" mean first and last in time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from recsys.config import CleaningConfig
from recsys.data.columns import EVENT, ITEM, RATING, ROW, TIMESTAMP, USER
from recsys.data.diagnose import first_ragged_line
from recsys.data.errors import EmptyResultError, InvalidValueError, MissingColumnError
from recsys.data.source import SourceInfo

__all__ = [
    "FilterStats",
    "deduplicate",
    "filter_event_types",
    "filter_rating",
    "k_core",
    "k_core_mask",
    "require_rows",
    "sort_chronologically",
    "validate",
]

# The composite sort key user * span + (t - t_min) must fit in an Int64.
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class FilterStats:
    """What one cleaning step removed."""

    step: str
    rows_removed: int
    users_removed: int
    items_removed: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (for the report)."""
        return {
            "step": self.step,
            "rows_removed": self.rows_removed,
            "users_removed": self.users_removed,
            "items_removed": self.items_removed,
            **self.details,
        }


def _distinct(values: pl.Series) -> int:
    """Distinct non-null values; a bincount for the dense integer codes used after encoding."""
    if values.dtype.is_integer() and len(values) and values.null_count() == 0:
        low, high = values.min(), values.max()
        if low >= 0 and high < 4 * len(values) + (1 << 16):  # type: ignore[operator]
            return int(np.count_nonzero(np.bincount(values.to_numpy())))
    return values.drop_nulls().n_unique()


def _stats(step: str, before: pl.DataFrame, after: pl.DataFrame, **details: Any) -> FilterStats:
    removed = before.height - after.height
    if removed == 0:
        return FilterStats(step, 0, 0, 0, details)
    users = _distinct(before[USER]) - _distinct(after[USER])
    items = _distinct(before[ITEM]) - _distinct(after[ITEM])
    return FilterStats(step, removed, users, items, details)


def require_rows(frame: pl.DataFrame, stats: FilterStats, info: SourceInfo, setting: str) -> None:
    """Raise :class:`EmptyResultError` when a step removed every interaction."""
    if frame.height == 0:
        raise EmptyResultError(
            f"{stats.step} removed every interaction ({stats.rows_removed} rows, "
            f"{stats.users_removed} users): no user is left",
            path=info.path,
            expected=f"a looser {setting}",
        )


def _first_row(frame: pl.DataFrame, condition: pl.Expr) -> int:
    return int(frame.lazy().filter(condition).select(ROW).head(1).collect().item())


def validate(
    frame: pl.DataFrame, info: SourceInfo, null_ids: Literal["error", "drop"]
) -> tuple[pl.DataFrame, FilterStats]:
    """Check ids and timestamps; drop or reject rows with a null id.

    Null timestamps and negative timestamps are always an error (there is no sensible order for them).
    A null id in a text file is often a short (ragged) line; that is reported as such when it is.

    Raises:
        InvalidValueError: the first offending row, with its line and column.
        RaggedRowError: a line with too few fields.
    """
    null_id = pl.col(USER).is_null() | pl.col(ITEM).is_null()
    # Null counts are kept with the data: checking them costs nothing on a clean log.
    has_null_ids = frame[USER].null_count() + frame[ITEM].null_count() > 0
    if has_null_ids and null_ids == "error":
        first = frame.lazy().filter(null_id).select(ROW, USER).head(1).collect()
        row = int(first[ROW][0])
        _raise_ragged_before(info, row)
        column = USER if first[USER][0] is None else ITEM
        raise InvalidValueError(
            f"{column} id is empty (null_ids: error)",
            path=info.path,
            column=info.raw(column),
            expected=f"a {column} id on every row (or cleaning.null_ids: drop)",
            **info.locate(row),
        )
    cleaned = frame.filter(~null_id) if has_null_ids else frame
    if not info.implied_order:
        _check_timestamps(cleaned, info)
    return cleaned, _stats("null_ids", frame, cleaned, policy=null_ids)


def _raise_ragged_before(info: SourceInfo, row: int) -> None:
    """A short line reads as nulls: report it as a ragged row if it is one."""
    if not info.is_text:
        return
    ragged = first_ragged_line(info)
    if ragged is not None and ragged.line is not None and ragged.line <= info.locate(row)["line"]:
        raise ragged


def _check_timestamps(frame: pl.DataFrame, info: SourceInfo) -> None:
    ts = pl.col(TIMESTAMP)
    lowest = frame[TIMESTAMP].min()
    if frame[TIMESTAMP].null_count():
        row = _first_row(frame, ts.is_null())
        _raise_ragged_before(info, row)
        raise InvalidValueError(
            "timestamp is empty",
            path=info.path,
            column=info.raw(TIMESTAMP),
            expected="a non-negative number (unix time) on every row",
            **info.locate(row),
        )
    if lowest is not None and lowest < 0:  # type: ignore[operator]
        row = _first_row(frame, ts < 0)
        value = frame.filter(pl.col(ROW) == row)[TIMESTAMP][0]
        raise InvalidValueError(
            f"timestamp {value} is negative",
            path=info.path,
            column=info.raw(TIMESTAMP),
            expected="a non-negative number (unix time)",
            **info.locate(row),
        )


def _keep_where(
    frame: pl.DataFrame, step: str, column: str, keep: pl.Expr, info: SourceInfo, **details: Any
) -> tuple[pl.DataFrame, FilterStats]:
    """The rows where ``keep`` holds, for the cleaning setting ``step`` that needs ``column``."""
    if column not in frame.columns:
        raise MissingColumnError(
            f"cleaning.{step} is set but the source has no {column} column",
            path=info.path,
            expected=f"source.columns.{column} naming the {column} column",
        )
    kept = frame.lazy().filter(keep).collect()
    return kept, _stats(step, frame, kept, **details)


def filter_event_types(
    frame: pl.DataFrame, event_types: list[str] | None, info: SourceInfo
) -> tuple[pl.DataFrame, FilterStats]:
    """Keep only rows whose event type is listed (no-op when ``event_types`` is None)."""
    if event_types is None:
        return frame, FilterStats("event_types", 0, 0, 0)
    keep = pl.col(EVENT).is_in(event_types)
    return _keep_where(frame, "event_types", EVENT, keep, info, event_types=list(event_types))


def filter_rating(
    frame: pl.DataFrame, threshold: float | None, info: SourceInfo
) -> tuple[pl.DataFrame, FilterStats]:
    """Implicit feedback: keep rows with ``rating >= threshold`` (no-op when None; null ratings go)."""
    if threshold is None:
        return frame, FilterStats("rating_threshold", 0, 0, 0)
    return _keep_where(
        frame, "rating_threshold", RATING, pl.col(RATING) >= threshold, info, threshold=threshold
    )


def sort_chronologically(frame: pl.DataFrame, n_users: int) -> pl.DataFrame:
    """Sort by (user, timestamp, original row): deterministic, ties broken by file order.

    With integer timestamps and user codes ``0..n_users-1`` the three keys fold into one Int64
    ``user * span + (t - t_min)`` and a stable sort on it (rows are still in file order here) replaces
    the much slower three-column sort: about 10x faster on 20M rows.
    """
    ts = frame[TIMESTAMP]
    in_file_order = frame[ROW].is_sorted()
    if ts.dtype == pl.Int64 and in_file_order and frame.height:
        low = int(ts.min())  # type: ignore[arg-type]
        span = int(ts.max()) - low + 1  # type: ignore[arg-type]
        if n_users * span <= _INT64_MAX:
            key = pl.col(USER).cast(pl.Int64) * span + (pl.col(TIMESTAMP) - low)
            return frame.lazy().sort(key, maintain_order=True).collect()
    return frame.lazy().sort([USER, TIMESTAMP, ROW]).collect()


def deduplicate(
    frame: pl.DataFrame, policy: Literal["keep_all", "keep_first", "keep_last"], n_items: int
) -> tuple[pl.DataFrame, FilterStats]:
    """Apply the duplicate policy to repeated (user, item) pairs of a chronologically sorted frame.

    ``keep_first`` keeps the earliest occurrence, ``keep_last`` the latest (ties in time: file order).
    Expects integer codes in ``user`` / ``item`` (``item < n_items``), so one Int64 pair key suffices.
    """
    if policy == "keep_all":
        return frame, FilterStats("duplicates", 0, 0, 0, {"policy": policy})
    pair = pl.col(USER).cast(pl.Int64) * n_items + pl.col(ITEM)
    keep = pair.is_first_distinct() if policy == "keep_first" else pair.is_last_distinct()
    kept = frame.lazy().filter(keep).collect()
    return kept, _stats("duplicates", frame, kept, policy=policy)


def k_core_mask(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> tuple[np.ndarray, int]:
    """Rows that survive the iterative k-core, and the number of rounds that removed something.

    Each round drops every row whose user has fewer than ``min_user`` rows or whose item has fewer than
    ``min_item`` rows (both counted on the rows left), until a round removes nothing. The result is the
    unique largest subset in which every user and every item meets its minimum. Vectorised on integer
    codes with ``bincount``: each round is O(rows left).
    """
    keep = np.ones(len(users), dtype=np.bool_)
    if min_user <= 1 and min_item <= 1:
        return keep, 0
    # Row positions still alive; None while nothing was removed (most clean logs stop after one round).
    alive: np.ndarray | None = None
    u, i = users, items
    rounds = 0
    while len(u):
        user_counts = np.bincount(u)
        item_counts = np.bincount(i)
        # Codes already gone have a zero count: they are not "too few", there is nothing left to drop.
        few_users = (user_counts > 0) & (user_counts < min_user)
        few_items = (item_counts > 0) & (item_counts < min_item)
        if not (few_users.any() or few_items.any()):
            break
        rounds += 1
        # Look rows up only on the side that has something to remove (a gather per row is the cost).
        ok = ~few_users[u] if few_users.any() else np.ones(len(u), dtype=np.bool_)
        if few_items.any():
            ok &= ~few_items[i]
        alive = np.flatnonzero(ok) if alive is None else alive[ok]
        u, i = u[ok], i[ok]
    if alive is not None:
        keep[:] = False
        keep[alive] = True
    return keep, rounds


def k_core(frame: pl.DataFrame, cleaning: CleaningConfig) -> tuple[pl.DataFrame, FilterStats]:
    """Apply :func:`k_core_mask` to a frame of integer codes."""
    mask, rounds = k_core_mask(
        frame[USER].to_numpy(),
        frame[ITEM].to_numpy(),
        cleaning.min_user_interactions,
        cleaning.min_item_interactions,
    )
    kept = frame.filter(pl.Series(mask)) if rounds else frame
    return kept, _stats(
        "k_core",
        frame,
        kept,
        min_user_interactions=cleaning.min_user_interactions,
        min_item_interactions=cleaning.min_item_interactions,
        rounds=rounds,
    )
