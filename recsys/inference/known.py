"""Known users' histories as a file of original ids (what the MLflow pyfunc model carries).

``histories.parquet``: one row per event, ``user_id``, ``item_id`` (ORIGINAL ids) and ``position`` (0 =
oldest within the user). It holds EVERY event of the prepared dataset (train + validation + test, in
chronological order), which is what ``recsys recommend`` scores known users from: production
recommendations follow the latest event, not a held-out split. Ids are stored as original ids rather than
indices, so the file reads on its own and is re-encoded with the bundle's vocabularies on load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.prepared import PreparedDataset
from recsys.data.sequences import Sequences
from recsys.data.vocab import Vocabulary
from recsys.inference.ids import ITEM_ID, USER_ID

__all__ = ["POSITION", "read_known_histories", "write_known_histories"]

POSITION = "position"
"""Order of an event within its user's history (0 = oldest)."""


def write_known_histories(dataset: PreparedDataset, path: Path) -> Path:
    """Write every event of ``dataset``, original ids, to ``path`` (parquet: user_id, item_id, position)."""
    seqs = dataset.all_events()
    # Position within the user's sequence: global row number minus the sequence's first row.
    position = np.arange(len(seqs.items), dtype=np.int64) - np.repeat(seqs.offsets[:-1], seqs.lengths())
    frame = pl.DataFrame(
        {
            USER_ID: pl.Series(
                USER_ID, dataset.users.decode(seqs.row_users()), dtype=dataset.users.ids.dtype
            ),
            ITEM_ID: pl.Series(ITEM_ID, dataset.items.decode(seqs.items), dtype=dataset.items.ids.dtype),
            POSITION: pl.Series(POSITION, position, dtype=pl.Int32),
        }
    )
    frame.write_parquet(path)
    return path


def read_known_histories(path: Path, users: Vocabulary, items: Vocabulary) -> Sequences:
    """Read a file written by :func:`write_known_histories`: one sequence per user index of ``users``.

    Users without events get an empty sequence, so ``result.users == arange(len(users))``.
    """
    frame = pl.read_parquet(path, columns=[USER_ID, ITEM_ID, POSITION])
    user_index, _ = users.encode(frame[USER_ID])
    item_index, _ = items.encode(frame[ITEM_ID])
    # Sort by (user, position) rather than trusting the file's row order.
    order = np.lexsort((frame[POSITION].to_numpy(), user_index))
    return Sequences.from_sorted(user_index[order], item_index[order], n_users=len(users))
