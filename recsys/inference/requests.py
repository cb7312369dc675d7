"""Which users to score, from which histories, and which items may be recommended.

All input errors (unknown ids under ``data.unknown_ids: error``, unreadable files) are raised here,
before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recsys.config import ConfigError, RecsysConfig
from recsys.data.errors import EmptyResultError, UnknownIdError
from recsys.data.prepared import PreparedDataset
from recsys.data.sequences import Sequences
from recsys.inference.recommend import (
    ITEM_ID,
    USER_ID,
    encode_known,
    histories_from_frame,
    read_histories_located,
    read_id_file,
    select_rows,
)
from recsys.training.bundle import Bundle, check_compatible

__all__ = ["ScoringInputs", "check_k", "concat_sequences", "gather_inputs", "item_list"]


def check_k(k: int) -> None:
    """``k`` must be positive (``--k`` / ``inference.k``)."""
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k} (--k / inference.k)")


@dataclass
class ScoringInputs:
    histories: Sequences  # users 0..n-1 (row numbers)
    row_ids: pl.Series  # original user id per row
    dataset: PreparedDataset | None
    from_dataset: int = 0
    from_file: int = 0
    unknown_users: int = 0
    unknown_items: int = 0
    sources: dict[str, str] = field(default_factory=dict)


def _same_dtype(a: pl.Series, b: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Give two id columns one type: b cast to a's when every value casts, else both as strings."""
    if a.dtype == b.dtype:
        return a, b
    cast = b.cast(a.dtype, strict=False)
    if cast.null_count() == b.null_count():
        return a, cast
    return a.cast(pl.String), b.cast(pl.String)


def concat_sequences(a: Sequences, b: Sequences) -> Sequences:
    """Rows of ``a`` then rows of ``b``, renumbered 0..n-1."""
    if not len(b):
        return a
    offsets = np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]])
    items = np.concatenate([a.items, b.items]).astype(np.int32)
    return Sequences(np.arange(len(a) + len(b), dtype=np.int64), offsets, items)


def gather_inputs(
    cfg: RecsysConfig, bundle: Bundle, users: str | Path, histories: Path | None
) -> ScoringInputs:
    """Resolve which users to score and from which histories; all input errors are raised here, before
    anything is written.

    Users given in ``--histories`` are scored from that history only. With a users file, only the listed
    users are scored (from ``--histories`` when they are there, else from the dataset); with ``all``,
    every dataset user and every ``--histories`` user is.
    """
    policy = cfg.data.unknown_ids
    sources = {"users": str(users), **({"histories": str(histories)} if histories else {})}
    file_seq, file_ids, unknown_items = Sequences.empty(), pl.Series(USER_ID, []), 0
    if histories is not None:
        frame, locate = read_histories_located(histories)
        file_seq, ids, unknown_items = histories_from_frame(
            frame, bundle, unknown=policy, source=histories, locate=locate
        )
        file_ids = pl.Series(USER_ID, ids)

    listed = None if str(users) == "all" else read_id_file(users, USER_ID).unique(maintain_order=True)
    if listed is not None and len(file_ids):
        listed_as_file = listed.cast(file_ids.dtype, strict=False)
        keep = file_ids.is_in(listed_as_file).to_numpy()
        file_seq, file_ids = select_rows(file_seq, np.flatnonzero(keep)), file_ids.filter(pl.Series(keep))
        listed = listed.filter(~listed_as_file.is_in(file_ids).fill_null(False))

    dataset: PreparedDataset | None = None
    known_seq, known_ids, unknown_users = Sequences.empty(), pl.Series(USER_ID, []), 0
    if listed is None or len(listed):
        dataset = PreparedDataset.load(cfg.data.output_dir)
        check_compatible(bundle, dataset)
        full = dataset.all_events()
        if listed is None:
            rows = np.arange(dataset.n_users, dtype=np.int64)
            if len(file_ids):
                replaced = dataset.users.ids.is_in(file_ids.cast(dataset.users.ids.dtype, strict=False))
                rows = rows[~replaced.fill_null(False).to_numpy()]
        else:
            index = encode_known(dataset.users, listed)
            unknown_users = int((index < 0).sum())
            if unknown_users and policy == "error":
                examples = listed.filter(pl.Series(index < 0)).head(5).to_list()
                raise UnknownIdError(
                    f"{unknown_users} user id(s) not in the prepared dataset {dataset.path}, e.g. {examples}",
                    path=users,
                    column=USER_ID,
                    expected="users of the dataset or of --histories (or data.unknown_ids: drop)",
                )
            rows = index[index >= 0]
        # Every user, in order: the dataset's CSR already is that, no copy needed.
        known_seq = full if len(rows) == len(full) else select_rows(full, rows)
        known_ids = dataset.users.ids.gather(rows).rename(USER_ID)

    if not len(known_seq) and not len(file_seq):
        _no_users(cfg, users, histories, unknown_users)
    known_ids, file_ids = _same_dtype(known_ids, file_ids)
    return ScoringInputs(
        histories=concat_sequences(known_seq, file_seq),
        row_ids=pl.concat([known_ids, file_ids.rename(USER_ID)]),
        dataset=dataset,
        from_dataset=len(known_seq),
        from_file=len(file_seq),
        unknown_users=unknown_users,
        unknown_items=unknown_items,
        sources=sources,
    )


def _no_users(cfg: RecsysConfig, users: str | Path, histories: Path | None, unknown: int) -> None:
    """Every listed user was unknown and dropped (``data.unknown_ids: drop``): say so, never write nothing."""
    raise EmptyResultError(
        f"none of the listed users is in the prepared dataset {cfg.data.output_dir}"
        + (" or in --histories" if histories is not None else "")
        + f" ({unknown} unknown, dropped by data.unknown_ids: drop)",
        path=users,
        column=USER_ID,
        expected="at least one user the model can score",
    )


def item_list(
    bundle: Bundle, path: Path | None, policy: str, *, deny: bool = False
) -> tuple[np.ndarray | None, int]:
    """Item indices of an ``--allow`` (``deny=False``) or ``--deny`` file and the number of unknown ids.

    An empty deny list denies nothing. An allow list must name at least one item the model knows: an
    empty one would silently turn every user's recommendations into zero rows.
    """
    if path is None:
        return None, 0
    ids = read_id_file(path, ITEM_ID, allow_empty=deny)
    index = encode_known(bundle.items, ids)
    unknown = int((index < 0).sum())
    if not deny and unknown == len(ids):
        raise EmptyResultError(
            f"none of the {len(ids)} allow-list item id(s) is known to the model, e.g. "
            f"{ids.head(5).to_list()}; every recommendation would be filtered out",
            path=path,
            column=ITEM_ID,
            expected="items of the model's vocabulary",
        )
    if unknown and policy == "error":
        examples = ids.filter(pl.Series(index < 0)).head(5).to_list()
        raise UnknownIdError(
            f"{unknown} item id(s) not known to the model, e.g. {examples}",
            path=path,
            column=ITEM_ID,
            expected="items of the model's vocabulary (or data.unknown_ids: drop)",
        )
    return index[index >= 0], unknown
