"""Original ids in, indices out: the columns of every inference input and output, the unknown-id policy,
and raw ``(user_id, item_id[, timestamp])`` rows turned into encoded chronological histories."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from recsys.data.errors import InvalidValueError, UnknownIdError, require_columns
from recsys.data.sequences import Sequences
from recsys.data.vocab import Vocabulary
from recsys.inference.topk import TopK

__all__ = [
    "ITEM_ID",
    "RANK",
    "SCORE",
    "SIMILAR_ITEM_ID",
    "TIMESTAMP_ID",
    "USER_ID",
    "IdTable",
    "UnknownPolicy",
    "as_series",
    "encode_ids",
    "histories_from_frame",
]

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP_ID = "timestamp"
SIMILAR_ITEM_ID = "similar_item_id"
SCORE = "score"
RANK = "rank"
"""Column names of every inference input and output (original ids)."""

UnknownPolicy = Literal["error", "drop"]


def as_series(values: Any, name: str) -> pl.Series:
    """Ids given as a polars/pandas Series, numpy array or any iterable, as a polars Series ``name``."""
    if isinstance(values, pl.Series):
        return values.rename(name)
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):  # pandas
        values = values.to_numpy()
    return pl.Series(name, values if isinstance(values, np.ndarray) else list(values))


def encode_ids(
    vocab: Vocabulary,
    ids: pl.Series,
    *,
    policy: UnknownPolicy,
    what: str,
    source: str | Path | None = None,
    expected: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(indices of the known ids, bool mask of the known ones)``, in input order.

    Unknown ids raise :class:`UnknownIdError` naming ``source``'s column and a few examples under
    ``policy="error"``; under ``"drop"`` they are left out (the caller counts ``~mask``).
    """
    index = vocab.lookup(ids)
    known = index >= 0
    if not known.all() and policy == "error":
        examples = ids.filter(pl.Series(~known)).head(5).to_list()
        raise UnknownIdError(
            f"{int((~known).sum())} {what} id(s) unknown to this model, e.g. {examples}",
            path=source,
            column=ids.name,
            expected=expected or f"{what}s the model was trained on (or data.unknown_ids: drop)",
        )
    return index[known], known


Where = Callable[[int], dict[str, int]]


def _check_rows(data: pl.DataFrame, cols: list[str], source: str | Path | None, where: Where) -> None:
    for column in cols:
        nulls = data.filter(pl.col(column).is_null())
        if nulls.height:
            raise InvalidValueError(
                f"{column} is empty ({nulls.height} row(s))",
                path=source,
                **where(int(nulls["_row"][0])),
                column=column,
                expected=f"a {column} on every row",
            )


def histories_from_frame(
    frame: pl.DataFrame,
    items: Vocabulary,
    *,
    unknown: UnknownPolicy = "error",
    source: str | Path | None = None,
    locate: Where | None = None,
) -> tuple[Sequences, pl.Series, int]:
    """Raw ``(user_id, item_id[, timestamp])`` rows -> encoded chronological histories.

    Users need not be known to the model: every distinct ``user_id`` gets a row, in order of first
    appearance, and ``Sequences.users`` are those row numbers (0..n-1). Within a user, events are ordered
    by ``timestamp`` when the column is present (ties and absent timestamps keep frame order). Items
    unknown to ``items`` raise :class:`UnknownIdError` (``unknown="error"``) or are dropped and counted
    (``"drop"``); a user whose items were all dropped keeps an empty history. Errors name ``source`` and
    ``locate(frame row)`` (``{"line": n}`` or ``{"row": n}``, :func:`~recsys.inference.files.
    read_histories_located`), else the 0-based frame row.

    Returns:
        (histories, the original user id of every row, number of unknown item rows).
    """
    require_columns(
        frame.columns,
        [USER_ID, ITEM_ID],
        path=source,
        expected=f"columns {USER_ID}, {ITEM_ID}[, {TIMESTAMP_ID}]",
    )
    time = [TIMESTAMP_ID] if TIMESTAMP_ID in frame.columns else []
    cols = [USER_ID, ITEM_ID, *time]
    data = frame.select(cols).with_row_index("_row")
    where = locate or (lambda row: {"row": row})
    _check_rows(data, cols, source, where)
    index = items.lookup(data[ITEM_ID])
    n_unknown = int((index < 0).sum())
    if n_unknown and unknown == "error":
        bad = data.filter(pl.Series(index < 0))
        raise UnknownIdError(
            f"{n_unknown} item id(s) not known to the model, e.g. {bad[ITEM_ID].head(5).to_list()}",
            path=source,
            **where(int(bad["_row"][0])),
            column=ITEM_ID,
            expected="items of the model's vocabulary (or data.unknown_ids: drop)",
        )
    user_ids = data[USER_ID].unique(maintain_order=True)
    user_index = pl.DataFrame({USER_ID: user_ids, "_user": np.arange(len(user_ids), dtype=np.int64)})
    ordered = (
        data.with_columns(pl.Series("_item", index))
        .join(user_index, on=USER_ID, how="left", maintain_order="left")
        .filter(pl.col("_item") >= 0)
        .sort(["_user", *time, "_row"])
    )
    histories = Sequences.from_sorted(
        ordered["_user"].to_numpy(), ordered["_item"].to_numpy().astype(np.int32), n_users=len(user_ids)
    )
    return histories, user_ids.rename(USER_ID), n_unknown


@dataclass
class IdTable:
    """TopK blocks (index space) -> one row per recommendation with the original ids: ``<row_column>,
    <item_column>, score, rank`` (a picklable callable: it travels to DDP processes).

    Attributes:
        row_ids: original id of every history row (``TopK.users - row_offset`` indexes it).
        item_ids: original item ids in index order (item index 1 is ``item_ids[0]``).
        row_offset: the index of ``row_ids[0]`` (1 when the rows are items, as in similar-items).
    """

    row_ids: pl.Series
    item_ids: pl.Series
    row_column: str = USER_ID
    item_column: str = ITEM_ID
    row_offset: int = 0

    def __call__(self, top: TopK) -> pl.DataFrame:
        rows, items, scores, ranks = top.to_long()  # PAD slots (nothing left to recommend) left out
        return pl.DataFrame(
            {
                self.row_column: self.row_ids.gather(rows - self.row_offset),
                self.item_column: self.item_ids.gather(items.astype(np.int64) - 1),
                SCORE: scores,
                RANK: ranks,
            }
        )
