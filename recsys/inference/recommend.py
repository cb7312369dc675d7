"""Batched top-k recommendation with item filters and bounded memory.

Shared by ``recsys recommend`` (``recsys.jobs.recommend``) and the MLflow pyfunc model; see
docs/CONTRACTS.md. One ``[batch, V]`` score block exists at a time (on CPU, a smaller block of a few
dozen to a few thousand rows, see ``CPU_SCORES_PER_CHUNK``) and the top k are taken from it immediately,
so memory grows with ``batch_size * V``, never with ``users * V``.

Histories are batched by length (rows sorted by their capped length, stably): a batch is padded only to its
own longest history, which on ML-1M roughly halves the encoder's work compared with padding every row to
``max_len``. Every row appears in exactly one batch and each :class:`TopK` says which rows it holds.

Inputs from files (lists of user or item ids, new users' histories) are read here too, with errors that
name the file, line and column (:mod:`recsys.data.errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl
import torch
from torch import Tensor

from recsys.config import ColumnsConfig, SourceConfig
from recsys.data.clean import validate
from recsys.data.columns import ITEM, ROW, TIMESTAMP, USER
from recsys.data.errors import (
    EmptySourceError,
    InvalidValueError,
    MissingColumnError,
    SourceNotFoundError,
    UnknownIdError,
)
from recsys.data.readers import SourceInfo, read_interactions
from recsys.data.sequences import Sequences
from recsys.data.vocab import Vocabulary
from recsys.evaluation.metrics import PAD, topk
from recsys.model.bert4rec import BERT4Rec

if TYPE_CHECKING:
    from recsys.training.bundle import Bundle

__all__ = [
    "CPU_SCORES_PER_CHUNK",
    "CPU_TOKENS_PER_CHUNK",
    "ITEM_ID",
    "TIMESTAMP_ID",
    "USER_ID",
    "BatchOrder",
    "ScoreFn",
    "TopK",
    "blocked_items",
    "encode_known",
    "histories_from_frame",
    "pad_histories",
    "plan_batches",
    "read_histories_file",
    "read_histories_located",
    "read_id_file",
    "select_rows",
    "topk_batches",
    "topk_rows",
]

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP_ID = "timestamp"
"""Column names of every inference input and output file (original ids)."""

UnknownPolicy = Literal["error", "drop"]
BatchOrder = Literal["length", "input"]
ScoreFn = Callable[[Tensor], Tensor]
Locator = Callable[[int], dict[str, int]]
"""Row of a frame read from a file -> the ``line=`` (text) or ``row=`` (parquet) keyword of a DataError."""
"""``Long[B, L]`` left-padded histories -> ``Float[B, V]`` scores (a new tensor the caller may modify)."""

_NEG_INF = float("-inf")
# On CPU a batch is scored in row chunks that stay within both budgets below (accelerators get the whole
# batch: they want large kernels). Tokens: the encoder is memory-bound, and a 1024-user batch at length
# 200 makes [200k, 4d] activations that spill out of cache on every layer; ~16k-token chunks took ML-1M's
# 6,040 users from 4.6 to 2.35 s of CPU (one thread; 4k-16k tokens were all as good). Scores: a
# [rows, V] block above glibc's 32 MiB mmap threshold is mapped fresh and page-faulted in on every
# allocation; at V = 100k, 1024-user blocks spent 1.3 s of 3.2 s CPU in the kernel, 64-user ones none.
CPU_TOKENS_PER_CHUNK = 16_384
CPU_SCORES_PER_CHUNK = 6 * 2**20  # float32 scores: 24 MiB


@dataclass(frozen=True)
class TopK:
    """The top k items of a batch of history rows, best first.

    Attributes:
        users: int64[B], the history rows' user indices (``Sequences.users`` of those rows).
        items: int32[B, k] item indices, best first; PAD (0) in slots that nothing could fill (everything
            else was excluded by the filters).
        scores: float32[B, k] model scores of those items; -inf in PAD slots.
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def to_long(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One row per recommendation: ``(users int64, items int32, scores float32, rank int32 1..k)``.

        PAD slots are left out, so a user with fewer than k candidates has fewer rows.
        """
        n, k = self.items.shape
        keep = (self.items != PAD).reshape(-1)
        users = np.repeat(self.users.astype(np.int64), k)[keep]
        rank = np.tile(np.arange(1, k + 1, dtype=np.int32), n)[keep]
        return users, self.items.reshape(-1)[keep], self.scores.reshape(-1)[keep], rank


# ------------------------------------------------------------------------------------------ batching
def plan_batches(
    lengths: np.ndarray, batch_size: int, *, max_width: int, order: BatchOrder = "length"
) -> list[np.ndarray]:
    """Row positions of each batch.

    ``order="length"`` sorts rows by ``min(length, max_width)`` (stable, so equal lengths keep row order)
    before cutting batches, which minimises padding; ``"input"`` keeps row order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(lengths)
    if order == "length":
        rows = np.argsort(np.minimum(lengths, max_width), kind="stable").astype(np.int64)
    else:
        rows = np.arange(n, dtype=np.int64)
    return [rows[lo : lo + batch_size] for lo in range(0, n, batch_size)]


def pad_histories(histories: Sequences, rows: np.ndarray, width: int) -> np.ndarray:
    """int64[B, width]: the most recent ``width`` items of each row, left-padded with PAD."""
    starts, ends = histories.offsets[rows], histories.offsets[rows + 1]
    src = ends[:, None] - width + np.arange(width)  # [B, W] positions in ``items``
    valid = src >= starts[:, None]
    if not histories.items.size:
        return np.zeros((len(rows), width), dtype=np.int64)
    gathered = histories.items[np.clip(src, 0, histories.items.size - 1)]
    return np.where(valid, gathered, PAD).astype(np.int64)


def _seen(histories: Sequences, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch row, item) of every item in the full histories of ``rows`` (not cut at max_len)."""
    starts, ends = histories.offsets[rows], histories.offsets[rows + 1]
    lengths = ends - starts
    batch_row = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    flat = shift + np.arange(int(lengths.sum()), dtype=np.int64)
    return batch_row, histories.items[flat].astype(np.int64)


def blocked_items(
    n_items: int, *, allow: np.ndarray | None = None, deny: np.ndarray | None = None
) -> np.ndarray | None:
    """Bool[V] (V = n_items + 2), True for items that must never be recommended; None when no filter.

    Args:
        allow: item indices that may be recommended (every other item is blocked); None allows all.
        deny: item indices that may not be recommended.
    """
    if allow is None and deny is None:
        return None
    for name, items in (("allow", allow), ("deny", deny)):
        if items is not None and items.size and (items.min() < 1 or items.max() > n_items):
            raise ValueError(f"{name} holds item indices outside 1..{n_items}")
    blocked = np.zeros(n_items + 2, dtype=np.bool_)
    if allow is not None:
        blocked[:] = True
        blocked[np.asarray(allow, dtype=np.int64)] = False
    if deny is not None:
        blocked[np.asarray(deny, dtype=np.int64)] = True
    blocked[PAD] = blocked[n_items + 1] = True
    return blocked


def _chunk_rows(n_rows: int, width: int, n_cols: int | None) -> int:
    """Rows per CPU chunk within the token and score budgets (at least one)."""
    step = CPU_TOKENS_PER_CHUNK // (width + 1)  # +1: the appended [MASK]
    if n_cols:
        step = min(step, CPU_SCORES_PER_CHUNK // n_cols)
    return max(1, min(step, n_rows))


def _topk_block(
    score_fn: ScoreFn,
    histories: Sequences,
    rows: np.ndarray,
    k: int,
    *,
    width: int,
    blocked: Tensor | None,
    exclude_seen: bool,
    device: torch.device | str,
) -> TopK:
    """Score ``rows`` at once, apply the filters, keep the top k."""
    inputs = torch.from_numpy(pad_histories(histories, rows, width)).to(device)  # [B, W]
    scores = score_fn(inputs)  # [B, V]
    if blocked is not None:
        scores.masked_fill_(blocked, _NEG_INF)  # broadcast over rows
    if exclude_seen:
        batch_row, items = _seen(histories, rows)
        # Scatter into the score block: O(seen) work, never a [B, V] mask.
        scores.index_put_(
            (torch.from_numpy(batch_row).to(device), torch.from_numpy(items).to(device)),
            torch.tensor(_NEG_INF, dtype=scores.dtype, device=scores.device),
        )
    top = topk(scores, k)  # [B, k]; PAD where the score is -inf
    values = scores.gather(1, top).masked_fill_(top == PAD, _NEG_INF)
    return TopK(
        users=histories.users[rows].astype(np.int64),
        items=top.to("cpu", torch.int32).numpy(),
        scores=values.to("cpu", torch.float32).numpy(),
    )


def topk_rows(
    score_fn: ScoreFn,
    histories: Sequences,
    rows: np.ndarray,
    k: int,
    *,
    max_history: int,
    n_cols: int | None = None,
    blocked: Tensor | None = None,
    exclude_seen: bool = True,
    device: torch.device | str = "cpu",
) -> TopK:
    """Top k for one batch of history rows (call under ``torch.inference_mode``).

    Args:
        score_fn: scorer, e.g. ``model.predict_next`` or a baseline's ``scores``.
        rows: positions in ``histories`` of this batch.
        max_history: most recent items given to ``score_fn`` (``max_len - 1`` for BERT4Rec). Seen-item
            exclusion always uses the FULL history.
        n_cols: V, the width of ``score_fn``'s output, to bound the CPU score block (see above).
        blocked: Bool[V] on ``device`` from :func:`blocked_items`.
    """
    lengths = histories.offsets[rows + 1] - histories.offsets[rows]
    width = int(min(max(int(lengths.max(initial=0)), 1), max_history))
    if n_cols is None and blocked is not None:
        n_cols = len(blocked)
    if torch.device(device).type != "cpu":
        return _topk_block(
            score_fn,
            histories,
            rows,
            k,
            width=width,
            blocked=blocked,
            exclude_seen=exclude_seen,
            device=device,
        )
    step = _chunk_rows(len(rows), width, n_cols)
    # Chunks write into the batch's outputs directly (no list of pieces to concatenate).
    out = TopK(
        users=histories.users[rows].astype(np.int64),
        items=np.empty((len(rows), k), dtype=np.int32),
        scores=np.empty((len(rows), k), dtype=np.float32),
    )
    for lo in range(0, len(rows), step):
        piece = _topk_block(
            score_fn,
            histories,
            rows[lo : lo + step],
            k,
            width=width,
            blocked=blocked,
            exclude_seen=exclude_seen,
            device=device,
        )
        out.items[lo : lo + step] = piece.items
        out.scores[lo : lo + step] = piece.scores
    return out


def topk_batches(
    model: BERT4Rec,
    histories: Sequences,
    k: int,
    *,
    exclude_seen: bool = True,
    allow: np.ndarray | None = None,
    deny: np.ndarray | None = None,
    batch_size: int = 1024,
    device: str = "cpu",
    order: BatchOrder = "length",
) -> Iterator[TopK]:
    """Top k items for every history row, one :class:`TopK` per batch of ``batch_size`` rows.

    Batches come in order of history length (``order="length"``, least padding) or of rows
    (``order="input"``); either way each row appears exactly once, named by ``TopK.users``.

    Args:
        model: a BERT4Rec (put in eval mode and moved to ``device``).
        histories: chronological item indices per user (``Sequences``).
        k: items per user (>= 1).
        exclude_seen: never recommend an item of the user's (full) history.
        allow: item indices that may be recommended (None: all).
        deny: item indices never recommended.
        batch_size: users per score block; memory is about ``batch_size * V * 4`` bytes plus the encoder.
        device: torch device for the model and the score block.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    model.eval().to(device)
    blocked_np = blocked_items(model.n_items, allow=allow, deny=deny)
    blocked = None if blocked_np is None else torch.from_numpy(blocked_np).to(device)
    max_history = model.max_len - 1
    for rows in plan_batches(histories.lengths(), batch_size, max_width=max_history, order=order):
        # Per batch, not around the loop: a generator must not leave inference mode on in its caller.
        with torch.inference_mode():
            result = topk_rows(
                model.predict_next,
                histories,
                rows,
                k,
                max_history=max_history,
                n_cols=model.vocab_size,
                blocked=blocked,
                exclude_seen=exclude_seen,
                device=device,
            )
        yield result


# ------------------------------------------------------------------------------------------ ids
def encode_known(vocab: Vocabulary, values: pl.Series) -> np.ndarray:
    """int64 index of each value in ``vocab``, -1 where unknown (or not castable to the id type)."""
    ids = vocab.ids
    series = values.cast(ids.dtype, strict=False)
    if len(ids) == 0:
        return np.full(len(series), -1, dtype=np.int64)
    pos = ids.search_sorted(series).to_numpy().astype(np.int64)
    candidates = ids.gather(np.minimum(pos, len(ids) - 1))
    matched = (candidates == series).fill_null(False).to_numpy()
    return np.where(matched, pos + vocab.offset, -1)


def select_rows(histories: Sequences, rows: np.ndarray) -> Sequences:
    """The histories at positions ``rows`` as a new CSR whose users are 0..len(rows)-1 (row numbers)."""
    starts, ends = histories.offsets[rows], histories.offsets[rows + 1]
    lengths = ends - starts
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    shift = np.repeat(starts - offsets[:-1], lengths)
    items = histories.items[shift + np.arange(int(offsets[-1]), dtype=np.int64)]
    return Sequences(np.arange(len(rows), dtype=np.int64), offsets, items.astype(np.int32))


def histories_from_frame(
    frame: pl.DataFrame,
    bundle: Bundle,
    *,
    unknown: UnknownPolicy = "error",
    source: str | Path | None = None,
    locate: Locator | None = None,
) -> tuple[Sequences, np.ndarray, int]:
    """Raw ``(user_id, item_id[, timestamp])`` rows -> encoded chronological histories.

    Users need not be known to the model: every distinct ``user_id`` gets a row, in order of first
    appearance, and ``Sequences.users`` are those row numbers (0..n-1), so ``user_ids[topk.users]`` are
    the original ids. Within a user, events are ordered by ``timestamp`` when the column is present
    (ties and absent timestamps keep frame order). Items unknown to the model raise
    :class:`UnknownIdError` (``unknown="error"``) or are dropped and counted (``"drop"``); a user whose
    items were all dropped keeps an empty history.

    Args:
        frame: the rows (any polars frame with those columns).
        bundle: the model bundle whose item vocabulary encodes the items.
        unknown: policy for unknown items.
        source: the file the frame came from, named in errors.
        locate: frame row -> ``{"line": n}`` or ``{"row": n}`` in ``source``
            (:func:`read_histories_located`); without it errors name the 0-based frame row.

    Returns:
        (histories, user_ids (original ids, one per row), number of unknown item rows).
    """
    for column in (USER_ID, ITEM_ID):
        if column not in frame.columns:
            raise MissingColumnError(
                f"no column {column!r}; the columns are {frame.columns}",
                path=source,
                column=column,
                expected=f"columns {USER_ID}, {ITEM_ID}[, {TIMESTAMP_ID}]",
            )
    where = locate or (lambda row: {"row": row})
    has_time = TIMESTAMP_ID in frame.columns
    cols = [USER_ID, ITEM_ID, *([TIMESTAMP_ID] if has_time else [])]
    data = frame.select(cols).with_row_index("_row")
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

    items = encode_known(bundle.items, data[ITEM_ID])
    n_unknown = int((items < 0).sum())
    if n_unknown and unknown == "error":
        bad = data.filter(pl.Series(items < 0))
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
        data.with_columns(pl.Series("_item", items))
        .join(user_index, on=USER_ID, how="left", maintain_order="left")
        .filter(pl.col("_item") >= 0)
        .sort(["_user", *([TIMESTAMP_ID] if has_time else []), "_row"])
    )
    histories = Sequences.from_sorted(
        ordered["_user"].to_numpy(), ordered["_item"].to_numpy().astype(np.int32), n_users=len(user_ids)
    )
    return histories, user_ids.to_numpy(), n_unknown


def read_id_file(path: str | Path, column: str, *, allow_empty: bool = False) -> pl.Series:
    """Ids from a file: parquet or CSV with a ``column`` column, or text with one id per line.

    The format follows the extension (``.parquet``/``.pq``, ``.csv``/``.tsv``; anything else is text). In a
    text file blank lines are skipped and a first line equal to ``column`` is taken as a header. Ids are
    strings from text files; :meth:`Vocabulary.encode` casts them to the vocabulary's type. A file with no
    id at all is an :class:`EmptySourceError` unless ``allow_empty`` (an empty deny list denies nothing;
    an empty users or allow list is a mistake upstream, never a silently empty output).
    """
    ids = _read_ids(Path(path), column)
    if not len(ids) and not allow_empty:
        raise EmptySourceError(
            f"holds no {column} (the file is empty or has only a header)",
            path=path,
            expected=f"at least one {column}",
        )
    return ids


def _read_ids(path: Path, column: str) -> pl.Series:
    file = path
    if not file.is_file():
        raise SourceNotFoundError("file not found", path=file, expected=f"a file of {column}s")
    if file.stat().st_size == 0:
        return pl.Series(column, [], dtype=pl.String)
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".pq", ".csv", ".tsv"):
        try:
            if suffix in (".parquet", ".pq"):
                frame = pl.read_parquet(file)
            else:
                frame = pl.read_csv(file, separator="\t" if suffix == ".tsv" else ",", infer_schema=False)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise InvalidValueError(f"cannot read ({str(exc).splitlines()[0]})", path=file) from None
        if column not in frame.columns:
            raise MissingColumnError(
                f"no column {column!r}; the columns are {frame.columns}",
                path=file,
                column=column,
                expected=f"a {column!r} column",
            )
        ids = frame[column]
        if ids.null_count():
            row = int(ids.is_null().arg_true()[0])
            raise InvalidValueError(f"{column} is empty", path=file, row=row, column=column)
        return ids.rename(column)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidValueError(f"cannot read as UTF-8 text ({exc})", path=file) from None
    values = [line.strip() for line in lines]
    if values and values[0] == column:
        values = values[1:]
    return pl.Series(column, [v for v in values if v], dtype=pl.String)


def _read_interactions(file: Path, timestamp: str | None) -> tuple[pl.DataFrame, SourceInfo]:
    source = SourceConfig(path=file, columns=ColumnsConfig(user=USER_ID, item=ITEM_ID, timestamp=timestamp))
    try:
        frame, info = read_interactions(source)
    except MissingColumnError as exc:
        if exc.column == TIMESTAMP_ID:
            raise
        # The reader's advice is about config keys; here the file itself must have the columns.
        raise MissingColumnError(
            exc.problem,
            path=file,
            column=exc.column,
            expected=f"columns {USER_ID}, {ITEM_ID}[, {TIMESTAMP_ID}]",
        ) from None
    return validate(frame, info, "error")[0], info


def read_histories_file(path: str | Path) -> pl.DataFrame:
    """A histories file (parquet or CSV/TSV with ``user_id, item_id[, timestamp]``) as a polars frame.

    Read by the data pipeline's reader, so a ragged line, an empty id, a non-numeric timestamp or a missing
    column is reported with its file, line and column. Without a timestamp column, file order is the order.
    """
    return read_histories_located(path)[0]


def read_histories_located(path: str | Path) -> tuple[pl.DataFrame, Locator]:
    """:func:`read_histories_file` and where each of its rows is in the file: the physical line of a text
    file (the header is line 1, blank lines count, as ``recsys prepare`` counts them) or the row of a
    parquet file, for :func:`histories_from_frame`'s errors."""
    file = Path(path)
    if not file.is_file():
        raise SourceNotFoundError("file not found", path=file, expected="a histories file")
    try:
        frame, info = _read_interactions(file, TIMESTAMP_ID)
    except MissingColumnError as exc:
        if exc.column != TIMESTAMP_ID:
            raise
        frame, info = _read_interactions(file, None)
    renamed = {USER: USER_ID, ITEM: ITEM_ID, **({} if info.implied_order else {TIMESTAMP: TIMESTAMP_ID})}
    rows = frame[ROW].to_numpy()

    def locate(row: int) -> dict[str, int]:
        return info.locate(int(rows[row]))

    return frame.select(list(renamed)).rename(renamed), locate
