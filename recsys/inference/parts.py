"""TopK blocks -> parquet parts with the original ids: the row buffer every top-k writer shares.

:class:`IdTable` turns a :class:`~recsys.inference.recommend.TopK` block (index space) into an arrow table
of original ids; :class:`PartBuffer` collects blocks and writes a part every ``rows_per_part // k`` rows
(a user is never split across parts) through :class:`~recsys.inference.writer.PartWriter`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from recsys.inference.recommend import TopK
from recsys.inference.writer import PartWriter

__all__ = ["RANK", "SCORE", "SIMILAR_ITEM_ID", "IdTable", "PartBuffer", "concat_topk"]

SIMILAR_ITEM_ID = "similar_item_id"
SCORE = "score"
RANK = "rank"


@dataclass
class IdTable:
    """TopK -> arrow table with original ids (a picklable callable: it travels to DDP processes)."""

    row_ids: pl.Series  # original id of every history row (or of every item, for similar-items)
    item_ids: pl.Series  # original item ids in index order (index 1 first)
    row_column: str
    item_column: str

    def __call__(self, top: TopK) -> pa.Table:
        users, items, scores, rank = top.to_long()
        return pl.DataFrame(
            {
                self.row_column: self.row_ids.gather(users),
                self.item_column: self.item_ids.gather(items.astype(np.int64) - 1),  # index 1 = ids[0]
                SCORE: scores,
                RANK: rank,
            }
        ).to_arrow()


def concat_topk(tops: list[TopK]) -> TopK:
    return TopK(
        np.concatenate([t.users for t in tops]),
        np.concatenate([t.items for t in tops]),
        np.concatenate([t.scores for t in tops]),
    )


class PartBuffer:
    """Collects TopK batches and writes a part every ``rows_per_part // k`` users (a user is never split).

    Within a part, rows are sorted by history row, so a single process writes users in input order.
    """

    def __init__(self, writer: PartWriter, per_part: int, to_table: Callable[[TopK], pa.Table]) -> None:
        self.writer = writer
        self.per_part = per_part
        self.to_table = to_table
        self._tops: list[TopK] = []
        self._count = 0
        self.users = 0

    def add(self, top: TopK) -> None:
        start = 0
        while start < len(top):
            take = min(len(top) - start, self.per_part - self._count)
            piece = (
                top
                if take == len(top)
                else TopK(*(a[start : start + take] for a in (top.users, top.items, top.scores)))
            )
            self._tops.append(piece)
            self._count += take
            start += take
            if self._count >= self.per_part:
                self.flush()

    def flush(self) -> None:
        if not self._tops:
            return
        merged = concat_topk(self._tops)
        order = np.argsort(merged.users, kind="stable")
        self.writer.write(self.to_table(TopK(merged.users[order], merged.items[order], merged.scores[order])))
        self.users += len(merged)
        self._tops, self._count = [], 0
