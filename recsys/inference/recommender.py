"""``Recommender``: a trained model ready to rank, in original ids.

A model bundle's network and vocabularies, and (optionally) the known users' histories, behind the one
ranking path (:func:`recsys.inference.topk.rank`). The batch job (``recsys recommend``), the MLflow pyfunc
model, ``recsys evaluate`` (as a scorer), similar-items and the notebook API all go through it::

    rec = Recommender.load("runs/ml-1m/model", known="prepared/ml-1m")
    rec.recommend(users=[1, 2], k=10)                 # user_id, item_id, score, rank
    rec.recommend(histories=frame, k=10)              # new users: user_id, item_id[, timestamp] rows
    rec.similar_items([3, 5], k=10)                   # item_id, similar_item_id, score, rank
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from torch import Tensor

from recsys.data.prepared import PreparedDataset
from recsys.data.sequences import Sequences
from recsys.data.vocab import Vocabulary
from recsys.inference.ids import (
    ITEM_ID,
    SIMILAR_ITEM_ID,
    USER_ID,
    IdTable,
    UnknownPolicy,
    as_series,
    encode_ids,
    histories_from_frame,
)
from recsys.inference.known import read_known_histories
from recsys.inference.similar import item_vectors, similar_items
from recsys.inference.topk import BatchOrder, TopK, blocked_items, plan_batches, rank
from recsys.model.bert4rec import BERT4Rec
from recsys.training.bundle import Bundle, check_compatible, load_bundle

__all__ = ["EMBEDDING", "Recommender", "Requests"]

_log = logging.getLogger(__name__)

EMBEDDING = "embedding"
"""Column of :meth:`Recommender.item_embeddings` / :meth:`Recommender.user_embeddings` (list of floats)."""
Users = Iterable[Any] | pl.Series | Literal["all"] | None


@dataclass(frozen=True)
class Requests:
    """Which histories to score: rows 0..n-1 of ``histories``, named by ``row_ids`` (original user ids).

    Known users come first (``from_known`` rows, from the stored histories), then the users of a
    histories frame (``from_histories`` rows). ``unknown_users`` / ``unknown_items`` count ids dropped
    under ``unknown_ids: drop``.
    """

    histories: Sequences
    row_ids: pl.Series
    from_known: int = 0
    from_histories: int = 0
    unknown_users: int = 0
    unknown_items: int = 0


def _same_dtype(a: pl.Series, b: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Give two id columns one type: b cast to a's when every value casts, else both as strings."""
    if a.dtype == b.dtype:
        return a, b
    cast = b.cast(a.dtype, strict=False)
    if cast.null_count() == b.null_count():
        return a, cast
    return a.cast(pl.String), b.cast(pl.String)


class Recommender:
    """Top-k recommendations, similar items and embeddings from a trained BERT4Rec, in original ids.

    Args:
        model: the network (put in eval mode on ``device``).
        users: the user vocabulary (indices of ``known``'s rows).
        items: the item vocabulary (item index 1 is ``items.ids[0]``).
        known: every known user's chronological history, one row per user index (``users``); None when
            only new users' histories will be scored.
        unknown_ids: ``error`` (raise :class:`~recsys.data.errors.UnknownIdError` naming them) or ``drop``.
        batch_size: users per score block (memory is about ``batch_size * V * 4`` bytes plus the encoder).
        device: torch device for the model and the score blocks.
    """

    def __init__(
        self,
        model: BERT4Rec,
        users: Vocabulary,
        items: Vocabulary,
        *,
        known: Sequences | None = None,
        unknown_ids: UnknownPolicy = "error",
        batch_size: int = 1024,
        device: str | torch.device = "cpu",
    ) -> None:
        if len(items) != model.n_items:
            raise ValueError(f"{len(items)} item ids for a model of {model.n_items} items")
        if known is not None and not np.array_equal(known.users, np.arange(len(users))):
            raise ValueError("known histories need one row per user index 0..len(users)-1")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.users = users
        self.items = items
        self.known = known
        self.unknown_ids: UnknownPolicy = unknown_ids
        self.batch_size = batch_size

    @classmethod
    def load(
        cls,
        bundle: str | Path | Bundle,
        *,
        known: str | Path | PreparedDataset | Sequences | None = None,
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
        unknown_ids: UnknownPolicy | None = None,
    ) -> Recommender:
        """A Recommender from a bundle directory (checksums verified) or a loaded :class:`Bundle`.

        Args:
            known: where known users' histories come from: a prepared dataset (directory or loaded; its
                every event, as ``recsys recommend`` scores them), a ``histories.parquet`` written by
                :func:`~recsys.inference.known.write_known_histories`, ``Sequences`` indexed by the
                bundle's users, or None (only ``histories=`` requests can be scored).
            batch_size, unknown_ids: default ``inference.batch_size`` / ``data.unknown_ids`` of the bundle's
                config.
        """
        loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        users, histories = loaded.users, None
        if isinstance(known, (str, Path)) and not Path(known).is_dir():
            histories = read_known_histories(Path(known), loaded.users, loaded.items)
        elif isinstance(known, (str, Path, PreparedDataset)):
            dataset = known if isinstance(known, PreparedDataset) else PreparedDataset.load(known)
            check_compatible(loaded, dataset)
            users, histories = dataset.users, dataset.all_events()
        else:
            histories = known
        return cls(
            loaded.model,
            users,
            loaded.items,
            known=histories,
            unknown_ids=unknown_ids or loaded.config.data.unknown_ids,
            batch_size=batch_size or loaded.config.inference.batch_size,
            device=device,
        )

    # -- index space -------------------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return int(self.model.n_items)

    @property
    def max_history(self) -> int:
        """Most recent items the model reads (``max_len - 1``: one slot is the appended [MASK])."""
        return int(self.model.max_len) - 1

    def scores(self, history: Tensor) -> Tensor:
        """``Long[B, L]`` left-padded histories -> ``Float[B, V]`` next-item scores (the ``Scorer``
        protocol of :mod:`recsys.evaluation`; PAD and MASK at -inf, nothing else excluded)."""
        with torch.inference_mode():
            return self.model.predict_next(history[:, -self.max_history :].to(self.device)).float()

    def rank(
        self,
        histories: Sequences,
        rows: np.ndarray,
        k: int,
        *,
        exclude_seen: bool = True,
        blocked: Tensor | None = None,
    ) -> TopK:
        """The top ``k`` of one batch of history rows (index space), through the one ranking path."""
        return rank(
            self.model.predict_next,
            histories,
            rows,
            k,
            max_history=self.max_history,
            exclude_seen=exclude_seen,
            blocked=blocked,
            n_cols=self.model.vocab_size,
            device=self.device,
        )

    def topk(
        self,
        histories: Sequences,
        k: int,
        *,
        exclude_seen: bool = True,
        blocked: Tensor | None = None,
        order: BatchOrder = "length",
    ) -> Iterator[TopK]:
        """Top ``k`` for every history row, one :class:`TopK` per batch (length-sorted batches by
        default: each row appears exactly once, named by ``TopK.users``)."""
        plan = plan_batches(histories.lengths(), self.batch_size, max_width=self.max_history, order=order)
        for rows in plan:
            yield self.rank(histories, rows, k, exclude_seen=exclude_seen, blocked=blocked)

    def blocked(
        self,
        allow: Iterable[Any] | None = None,
        deny: Iterable[Any] | None = None,
        *,
        sources: tuple[Path | None, Path | None] = (None, None),
    ) -> tuple[Tensor | None, int]:
        """``(Bool[V] on the device or None, unknown ids dropped)`` for allow/deny lists of ORIGINAL ids."""
        lists: list[np.ndarray | None] = []
        unknown = 0
        for ids, source in zip((allow, deny), sources, strict=True):
            if ids is None:
                lists.append(None)
                continue
            index, known = encode_ids(
                self.items, as_series(ids, ITEM_ID), policy=self.unknown_ids, what="item", source=source
            )
            lists.append(index)
            unknown += int((~known).sum())
        mask = blocked_items(self.n_items, allow=lists[0], deny=lists[1])
        return (None if mask is None else torch.from_numpy(mask).to(self.device)), unknown

    # -- original ids ------------------------------------------------------------------------------
    def requests(
        self,
        users: Users = None,
        histories: Any = None,
        *,
        users_source: Path | None = None,
        histories_source: Path | None = None,
        histories_locate: Callable[[int], dict[str, int]] | None = None,
    ) -> Requests:
        """Resolve what to score; every unknown-id error is raised here, before anything is scored.

        ``users`` (original ids) are scored from the known histories, except those that ``histories`` (a
        polars or pandas frame of ``user_id, item_id[, timestamp]`` rows) gives, which are scored from
        there. ``users=None`` means every known user when no ``histories`` are given, and only the
        ``histories`` users otherwise; ``users="all"`` means every known user plus the ``histories`` ones.
        Errors name ``users_source`` / ``histories_source`` (and ``histories_locate(row)``'s line or row).
        """
        file_seq, file_ids, unknown_items = Sequences.empty(), pl.Series(USER_ID, []), 0
        if histories is not None:
            frame = histories if isinstance(histories, pl.DataFrame) else pl.from_pandas(histories)
            file_seq, file_ids, unknown_items = histories_from_frame(
                frame, self.items, unknown=self.unknown_ids, source=histories_source, locate=histories_locate
            )
        everyone = (isinstance(users, str) and users == "all") or (users is None and histories is None)
        listed = None if everyone or users is None else as_series(users, USER_ID).unique(maintain_order=True)
        if listed is not None and len(file_ids):
            listed_as_file = listed.cast(file_ids.dtype, strict=False)
            keep = file_ids.is_in(listed_as_file).to_numpy()
            file_seq = file_seq.take(np.flatnonzero(keep), renumber=True)
            file_ids = file_ids.filter(pl.Series(keep))
            listed = listed.filter(~listed_as_file.is_in(file_ids).fill_null(False))
        rows, unknown_users = np.zeros(0, dtype=np.int64), 0
        if everyone:
            rows = np.arange(len(self.users), dtype=np.int64)
            if len(file_ids):  # a user given a new history is scored from it only
                replaced = self.users.ids.is_in(file_ids.cast(self.users.ids.dtype, strict=False))
                rows = rows[~replaced.fill_null(False).to_numpy()]
        elif listed is not None and len(listed):
            rows, known = encode_ids(
                self.users, listed, policy=self.unknown_ids, what="user", source=users_source
            )
            unknown_users = int((~known).sum())
        if unknown_users or unknown_items:
            _log.warning(
                "dropped %d user id(s) and %d history event(s) unknown to the model",
                unknown_users,
                unknown_items,
            )
        known_seq = self._known_rows(rows)
        known_ids, file_ids = _same_dtype(self.users.ids.gather(rows - self.users.offset), file_ids)
        return Requests(
            histories=known_seq.concat(file_seq) if len(file_seq) else known_seq,
            row_ids=pl.concat([known_ids.rename(USER_ID), file_ids.rename(USER_ID)]),
            from_known=len(known_seq),
            from_histories=len(file_seq),
            unknown_users=unknown_users,
            unknown_items=unknown_items,
        )

    def _known_rows(self, rows: np.ndarray) -> Sequences:
        if not len(rows):
            return Sequences.empty()
        if self.known is None:
            raise ValueError(
                "this Recommender has no known users' histories: load it with known=<prepared dataset> "
                "or pass histories=<frame of user_id, item_id rows>"
            )
        # Every user in index order: the stored CSR already is that, no copy needed. (Every user in another
        # order, e.g. a users file, is not: the rows must follow the request.)
        in_order = len(rows) == len(self.known) and bool(np.array_equal(rows, self.known.users))
        return self.known if in_order else self.known.take(rows, renumber=True)

    def recommend(
        self,
        users: Users = None,
        *,
        histories: Any = None,
        k: int = 10,
        exclude_seen: bool = True,
        allow: Iterable[Any] | None = None,
        deny: Iterable[Any] | None = None,
    ) -> pl.DataFrame:
        """``user_id, item_id, score, rank`` (original ids; rank 1 = best), users in request order.

        See :meth:`requests` for ``users`` / ``histories``; ``allow`` / ``deny`` are item ids that may /
        may not be recommended. A user with fewer than ``k`` candidates left gets fewer rows.
        """
        request = self.requests(users, histories)
        blocked, _ = self.blocked(allow, deny)
        tops = list(self.topk(request.histories, k, exclude_seen=exclude_seen, blocked=blocked))
        return self.frame(tops, request.row_ids)

    def frame(self, tops: list[TopK], row_ids: pl.Series) -> pl.DataFrame:
        """TopK blocks over rows named by ``row_ids`` -> ``user_id, item_id, score, rank``, in row order."""
        table = IdTable(row_ids, self.items.ids)
        return table(TopK.concat(tops).sorted_by_user() if tops else _empty_topk(1))

    def similar_topk(self, k: int, queries: np.ndarray | None = None) -> Iterator[TopK]:
        """The ``k`` nearest items of each query item index (all items when None), in blocks whose
        ``users`` are the query items (:func:`recsys.inference.similar.similar_items`)."""
        return similar_items(self.model, k, queries=queries, batch_size=self.batch_size, device=self.device)

    def similar_items(self, items: Iterable[Any] | None = None, k: int = 10) -> pl.DataFrame:
        """``item_id, similar_item_id, score, rank``: the ``k`` nearest items of each of ``items`` (all
        when None) by cosine of the output item embeddings, itself excluded."""
        queries = None
        if items is not None:
            series = as_series(items, ITEM_ID).unique(maintain_order=True)
            queries, _ = encode_ids(self.items, series, policy=self.unknown_ids, what="item")
        blocks = list(self.similar_topk(k, queries))
        table = IdTable(self.items.ids, self.items.ids, ITEM_ID, SIMILAR_ITEM_ID, row_offset=1)
        return table(TopK.concat(blocks) if blocks else _empty_topk(k))

    def item_embeddings(self, *, normalized: bool = False) -> pl.DataFrame:
        """``item_id, embedding``: the output item embedding of every item (unit length if asked)."""
        with torch.inference_mode():
            weight = self.model.output_weight()[1 : self.n_items + 1].detach().float().cpu()
        vectors = item_vectors(self.model).cpu() if normalized else weight
        return pl.DataFrame({ITEM_ID: self.items.ids, EMBEDDING: vectors.numpy()})

    def user_embeddings(self, users: Users = None, *, histories: Any = None) -> pl.DataFrame:
        """``user_id, embedding``: the model's state after each user's history (the [MASK] hidden state
        that :meth:`scores` dots with the item embeddings), users as in :meth:`recommend`."""
        request = self.requests(users, histories)
        seqs = request.histories
        out = np.zeros((len(seqs), self.model.output_size), dtype=np.float32)
        for rows in plan_batches(seqs.lengths(), self.batch_size, max_width=self.max_history):
            width = int(min(max(int(seqs.lengths()[rows].max(initial=0)), 1), self.max_history))
            inputs = torch.from_numpy(seqs.pad(rows, width)).to(self.device)
            with torch.inference_mode():
                out[rows] = self.model.next_state(inputs).float().cpu().numpy()
        return pl.DataFrame({USER_ID: request.row_ids, EMBEDDING: out})


def _empty_topk(k: int) -> TopK:
    return TopK(np.zeros(0, np.int64), np.zeros((0, k), np.int32), np.zeros((0, k), np.float32))
