"""Batch top-k for many users into atomic parquet parts: what ``recsys recommend`` runs.

One process (the default, ``runtime.devices: 1``) ranks the batches in a plain loop through
:meth:`Recommender.rank` and writes the parts as it goes: no Lightning, so a cold ``recsys recommend``
does not import it. Several devices or processes go through Lightning's predict loop
(:mod:`recsys.inference.distributed`), where every rank ranks every ``world_size``-th batch of the same
plan through the same :func:`recsys.inference.topk.rank`, so both give the same rows.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from torch import Tensor

from recsys.config import RecsysConfig
from recsys.data.sequences import Sequences
from recsys.inference.ids import ITEM_ID, RANK, SCORE, USER_ID, IdTable
from recsys.inference.parts import plan_parts, write_parts
from recsys.inference.recommender import Recommender
from recsys.inference.writer import OutputManifest
from recsys.training.runtime import world_size

__all__ = ["write_recommendations"]


def write_recommendations(
    recommender: Recommender,
    histories: Sequences,
    row_ids: pl.Series,
    out: Path,
    *,
    cfg: RecsysConfig,
    k: int,
    exclude_seen: bool = True,
    blocked: Tensor | None = None,
    manifest: OutputManifest | None = None,
) -> OutputManifest:
    """Rank every history row and publish ``user_id, item_id, score, rank`` parquet parts at ``out``.

    Args:
        histories: users 0..n-1 (row numbers), chronological item indices.
        row_ids: original user id of every row.
        cfg: ``inference.rows_per_part``; ``runtime`` devices / strategy (one process unless they ask for
            more) and progress bar.
        blocked: Bool[V] items never recommended (:meth:`Recommender.blocked`).
        manifest: entries describing the output (model, fingerprint, filters, ...).

    Returns:
        The published manifest. A full disk (or another OS error while writing) is one
        :class:`~recsys.data.errors.OutputWriteError` naming ``out``; the previous output stays.
    """
    if not len(histories):
        raise ValueError("no history rows to score")  # callers check their inputs; never an empty output
    per_part = max(1, cfg.inference.rows_per_part // k)
    plan = plan_parts(histories.lengths(), per_part, recommender.batch_size, recommender.max_history)
    to_table = IdTable(row_ids, recommender.items.ids)
    entries: OutputManifest = {
        "kind": "recommendations",
        **(manifest or {}),
        "k": k,
        "users": len(histories),
        "rows_per_part": cfg.inference.rows_per_part,
        "columns": [USER_ID, ITEM_ID, SCORE, RANK],
    }
    if world_size(cfg.runtime) > 1:
        from recsys.inference.distributed import predict_parts

        return predict_parts(
            recommender, histories, plan, out, cfg=cfg, k=k, exclude_seen=exclude_seen, blocked=blocked,
            to_table=to_table, per_part=per_part, manifest=entries,
        )  # fmt: skip
    blocks = (
        recommender.rank(histories, rows, k, exclude_seen=exclude_seen, blocked=blocked) for rows in plan
    )
    return write_parts(blocks, out, per_part=per_part, to_table=to_table, manifest=entries)
