"""Score, exclude seen items, take the top k: the one ranking path.

Validation during training (through :mod:`recsys.evaluation.protocol`), ``recsys evaluate`` for the model
and every baseline, the batch job, the MLflow pyfunc model, the notebook API and similar-items all rank
through :func:`rank`, so an item list means the same thing everywhere (see docs/CONTRACTS.md: PAD = 0,
real items 1..n_items, MASK = n_items + 1, V = n_items + 2).

One ``[rows, V]`` score block exists at a time: on CPU a batch is scored in row chunks within both
budgets below (accelerators get the whole batch: they want large kernels), and the top k are taken from
each block at once, so memory grows with ``batch_size * V``, never with ``users * V``.

Histories are batched by length (:func:`plan_batches`, stable): a batch is padded only to its own
longest history, which on ML-1M roughly halves the encoder's work compared with padding every row to
``max_len``. Every row appears in exactly one batch and each :class:`TopK` says which rows it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from recsys.data.sequences import PAD, Sequences

__all__ = [
    "CPU_SCORES_PER_CHUNK",
    "CPU_TOKENS_PER_CHUNK",
    "BatchOrder",
    "ScoreFn",
    "TopK",
    "blocked_items",
    "mask_special_",
    "plan_batches",
    "rank",
    "topk",
]

BatchOrder = Literal["length", "input"]
ScoreFn = Callable[[Tensor], Tensor]
"""``Long[B, L]`` left-padded histories -> ``Float[B, V]`` scores (a new tensor the caller may modify)."""
ScoresHook = Callable[[np.ndarray, Tensor], None]
"""Called with ``(rows, scores)`` for every raw score block, before any item is excluded."""

_NEG_INF = float("-inf")
# Tokens: the encoder is memory-bound, and a 1024-user batch at length 200 makes [200k, 4d] activations
# that spill out of cache on every layer; ~16k-token chunks took ML-1M's 6,040 users from 4.6 to 2.35 s of
# CPU (one thread; 4k-16k tokens were all as good). Scores: a [rows, V] block above glibc's 32 MiB mmap
# threshold is mapped fresh and page-faulted in on every allocation; at V = 100k, 1024-user blocks spent
# 1.3 s of 3.2 s CPU in the kernel, 64-user ones none.
CPU_TOKENS_PER_CHUNK = 16_384
CPU_SCORES_PER_CHUNK = 6 * 2**20  # float32 scores: 24 MiB


def mask_special_(scores: Tensor) -> Tensor:
    """Set the PAD (column 0) and MASK (column V-1) scores to -inf in place; returns ``scores``."""
    scores[:, PAD] = _NEG_INF
    scores[:, -1] = _NEG_INF
    return scores


def topk(scores: Tensor, k: int) -> Tensor:
    """The k best items per row, best first; Long[B, k].

    Ties are broken by the lower item index, so results do not depend on the platform's sort (a baseline
    with many equal scores gives the same list on CPU and GPU). Slots whose score is -inf (excluded items,
    when fewer than k items remain) are returned as PAD = 0, which the metrics treat as empty.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    n_rows, n_cols = scores.shape
    k_eff = min(k, n_cols)
    # One extra column tells whether an item left out ties with the last one kept: only then did torch.topk
    # pick an arbitrary subset of the tied items, and only those rows (rare for trained models) are redone.
    values, idx = scores.topk(min(k_eff + 1, n_cols), dim=1)  # [B, k(+1)]
    if values.shape[1] > k_eff:
        ambiguous = values[:, k_eff] == values[:, k_eff - 1]
        values, idx = values[:, :k_eff].contiguous(), idx[:, :k_eff].contiguous()
        if bool(ambiguous.any()):
            rows = ambiguous.nonzero().squeeze(1)
            sub = scores[rows]  # [R, V]
            boundary = values[rows, -1:]  # [R, 1]
            n_above = (values[rows] > boundary).sum(1, keepdim=True)  # all of these are in
            tied = sub == boundary
            keep = (sub > boundary) | (tied & (tied.cumsum(1, dtype=torch.int32) <= k_eff - n_above))
            chosen = keep.nonzero()[:, 1].view(-1, k_eff)  # exactly k per row, lowest tied indices
            idx[rows] = chosen
            values[rows] = sub.gather(1, chosen)
    # Order by (score desc, index asc): sort by index, then a stable sort by score.
    order = idx.argsort(dim=1)
    idx, values = idx.gather(1, order), values.gather(1, order)
    order = values.argsort(dim=1, descending=True, stable=True)
    idx, values = idx.gather(1, order), values.gather(1, order)
    idx = idx.masked_fill(values == _NEG_INF, PAD)
    if k > k_eff:
        idx = torch.cat([idx, idx.new_zeros(n_rows, k - k_eff)], dim=1)
    return idx


@dataclass(frozen=True)
class TopK:
    """The top k items of a batch of history rows, best first.

    Attributes:
        users: int64[B], the history rows' user indices (``Sequences.users`` of those rows).
        items: int32[B, k] item indices, best first; PAD (0) in slots that nothing could fill (everything
            else was excluded by the filters).
        scores: float32[B, k] scores of those items; -inf in PAD slots.
    """

    users: np.ndarray
    items: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def slice(self, lo: int, hi: int) -> TopK:
        """Rows ``lo:hi`` (views)."""
        return TopK(self.users[lo:hi], self.items[lo:hi], self.scores[lo:hi])

    def sorted_by_user(self) -> TopK:
        """Rows in ascending ``users`` order (stable)."""
        order = np.argsort(self.users, kind="stable")
        return TopK(self.users[order], self.items[order], self.scores[order])

    @staticmethod
    def concat(tops: Sequence[TopK]) -> TopK:
        """The rows of several blocks, in order."""
        return TopK(
            np.concatenate([t.users for t in tops]),
            np.concatenate([t.items for t in tops]),
            np.concatenate([t.scores for t in tops]),
        )

    def to_long(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One row per recommendation: ``(users int64, items int32, scores float32, rank int32 1..k)``.

        PAD slots are left out, so a user with fewer than k candidates has fewer rows.
        """
        n, k = self.items.shape
        keep = (self.items != PAD).reshape(-1)
        users = np.repeat(self.users.astype(np.int64), k)[keep]
        ranks = np.tile(np.arange(1, k + 1, dtype=np.int32), n)[keep]
        return users, self.items.reshape(-1)[keep], self.scores.reshape(-1)[keep], ranks


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


def _width(histories: Sequences, rows: np.ndarray, max_history: int) -> int:
    """The padded input width for ``rows``: their longest history, at most ``max_history``, at least 1."""
    lengths = histories.offsets[rows + 1] - histories.offsets[rows]
    return int(min(max(int(lengths.max(initial=0)), 1), max_history))


@dataclass(frozen=True)
class _Filters:
    k: int
    max_history: int
    exclude_seen: bool
    blocked: Tensor | None
    n_cols: int | None
    device: torch.device
    on_scores: ScoresHook | None


def _rank_block(
    score_fn: ScoreFn, histories: Sequences, rows: np.ndarray, f: _Filters
) -> tuple[Tensor, Tensor]:
    """Score ``rows`` at once, apply the filters, keep the top k: ``(items Long[B, k], scores)``."""
    # Padded to these rows' own longest history: in a length-sorted batch, a chunk of short histories
    # is not padded to the batch's longest (on ML-1M 10% fewer tokens, 13% less attention).
    width = _width(histories, rows, f.max_history)
    inputs = torch.from_numpy(histories.pad(rows, width)).to(f.device)  # [B, W]
    scores = score_fn(inputs)  # [B, V]
    if f.n_cols is not None and tuple(scores.shape) != (len(rows), f.n_cols):
        raise ValueError(f"scorer returned {tuple(scores.shape)}, expected ({len(rows)}, {f.n_cols})")
    mask_special_(scores)
    if f.on_scores is not None:
        f.on_scores(rows, scores)
    if f.blocked is not None:
        scores.masked_fill_(f.blocked, _NEG_INF)  # broadcast over rows
    if f.exclude_seen:
        # Every item of the FULL history (not cut at the model's input width), scattered into the score
        # block: O(seen) work, never a [B, V] mask.
        positions, batch_row = histories.positions(rows)
        seen = torch.from_numpy(histories.items[positions].astype(np.int64))
        scores.index_put_(
            (torch.from_numpy(batch_row).to(f.device), seen.to(f.device)),
            torch.tensor(_NEG_INF, dtype=scores.dtype, device=scores.device),
        )
    top = topk(scores, f.k)  # [B, k]; PAD where the score is -inf
    return top, scores.gather(1, top).masked_fill_(top == PAD, _NEG_INF)


def rank(
    score_fn: ScoreFn,
    histories: Sequences,
    rows: np.ndarray,
    k: int,
    *,
    max_history: int,
    exclude_seen: bool = True,
    blocked: Tensor | None = None,
    n_cols: int | None = None,
    device: torch.device | str = "cpu",
    on_scores: ScoresHook | None = None,
) -> TopK:
    """The top ``k`` items for one batch of history rows (in inference mode: nothing here is trained).

    Each row is left-padded to its block's longest history (at most ``max_history`` items) and scored;
    PAD and MASK, the ``blocked`` items and (``exclude_seen``) every item of the row's FULL history are set
    to -inf; the k best remain, ties to the lower item index, PAD where nothing is left.

    Args:
        score_fn: ``model.predict_next``, a baseline's ``scores``, ``Recommender.score``.
        histories: chronological item indices; ``rows`` are positions in it.
        max_history: most recent items given to ``score_fn`` (``max_len - 1`` for BERT4Rec).
        blocked: Bool[V] on ``device`` from :func:`blocked_items`.
        n_cols: V, the width of ``score_fn``'s output, to bound the CPU score block (see above).
        on_scores: sees every raw score block before exclusion (sampled metrics read target scores there).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rows = np.asarray(rows, dtype=np.int64)
    dev = torch.device(device)
    n_cols = n_cols if n_cols is not None or blocked is None else len(blocked)
    f = _Filters(k, max_history, exclude_seen, blocked, n_cols, dev, on_scores)
    width = _width(histories, rows, max_history)
    step = len(rows) if dev.type != "cpu" else _chunk_rows(len(rows), width, n_cols)
    items = np.empty((len(rows), k), dtype=np.int32)
    scores = np.empty((len(rows), k), dtype=np.float32)
    with torch.inference_mode():
        for lo in range(0, len(rows), max(step, 1)):
            top, values = _rank_block(score_fn, histories, rows[lo : lo + step], f)
            items[lo : lo + step] = top.to("cpu", torch.int32).numpy()
            scores[lo : lo + step] = values.to("cpu", torch.float32).numpy()
    return TopK(users=histories.users[rows].astype(np.int64), items=items, scores=scores)
