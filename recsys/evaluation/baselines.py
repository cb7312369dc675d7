"""Baselines, and the one evaluation loop that scores any :class:`Scorer` (baseline or model) the same way.

Sequences are taken as raw CSR numpy arrays (``offsets: int64[n+1]``, ``items: int32[total]``, each user's
items oldest first), or anything with ``offsets``/``items`` attributes such as
``recsys.data.sequences.Sequences``, so this module does not depend on the data module's class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from recsys.evaluation.metrics import (
    PAD,
    RankingMetrics,
    SampleBy,
    SampledRankingMetrics,
    mask_special_,
    sampled_ranks,
    topk,
)

__all__ = [
    "CSR",
    "EvalResult",
    "LastItemTransitions",
    "MostPopular",
    "Scorer",
    "as_csr",
    "evaluate_scorer",
    "fit_baselines",
    "item_counts_from_csr",
]


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores the whole catalogue for a batch of histories (baselines, the model wrapper).

    ``scores(history)`` takes Long[B, L] histories, left-padded with PAD = 0 (the most recent item in the
    last column), and returns a new Float[B, V] tensor, V = n_items + 2, that the caller may modify in place.
    """

    def scores(self, history: Tensor) -> Tensor:
        """Float[B, V] scores for Long[B, L] left-padded histories."""
        ...


class CSR(NamedTuple):
    """Per-user sequences as CSR arrays: user i's items are ``items[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray  # int64[n + 1]
    items: np.ndarray  # int[total]
    users: np.ndarray | None = None  # int64[n] user indices, ascending; None: rows are positions


def as_csr(data: Any) -> CSR:
    """Normalise sequences to :class:`CSR`: a ``CSR``, an object with ``offsets`` and ``items`` (and
    optionally ``users``) attributes such as ``Sequences``, or a list of per-user item lists/arrays."""
    if isinstance(data, CSR):
        return data
    if hasattr(data, "offsets") and hasattr(data, "items"):
        users = getattr(data, "users", None)
        return CSR(
            np.asarray(data.offsets, dtype=np.int64),
            np.asarray(data.items),
            None if users is None else np.asarray(users, dtype=np.int64),
        )
    if isinstance(data, Sequence):
        arrays = [np.asarray(s, dtype=np.int64).reshape(-1) for s in data]
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        return CSR(offsets, items)
    raise TypeError(f"cannot read sequences from {type(data).__name__}")


def item_counts_from_csr(items: np.ndarray, n_items: int) -> np.ndarray:
    """int64[n_items + 2] interaction counts per item column (PAD and MASK = 0)."""
    counts = np.bincount(np.asarray(items, dtype=np.int64), minlength=n_items + 2)[: n_items + 2]
    counts = counts.astype(np.int64)
    counts[PAD] = 0
    counts[-1] = 0
    return counts


def _gather_ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``arange(starts[i], ends[i])`` and the row each position belongs to, without a loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(starts)), lengths)
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(total), rows


# --------------------------------------------------------------------------------------- baselines
class MostPopular:
    """Scores every user by training popularity (interaction count); PAD and MASK score -inf.

    Equal counts are ordered by item index by :func:`recsys.evaluation.metrics.topk`.
    """

    def __init__(self, item_counts: np.ndarray, n_items: int):
        counts = np.asarray(item_counts, dtype=np.float64).reshape(-1)
        if counts.size == n_items + 1:
            counts = np.append(counts, 0.0)
        if counts.size != n_items + 2:
            raise ValueError(f"item_counts has {counts.size} entries, expected n_items + 2 = {n_items + 2}")
        self.n_items = n_items
        # float32 represents every count exactly up to 2**24 interactions per item.
        self._row = mask_special_(torch.as_tensor(counts, dtype=torch.float32).unsqueeze(0))[0]

    @classmethod
    def fit(cls, offsets: np.ndarray, items: np.ndarray, n_items: int) -> MostPopular:
        """Count items in training sequences (``offsets`` is unused but keeps the CSR signature uniform)."""
        del offsets
        return cls(item_counts_from_csr(items, n_items), n_items)

    def scores(self, history: Tensor) -> Tensor:
        """Float[B, V]: the same popularity row for every user."""
        return self._row.to(history.device).expand(history.shape[0], -1).clone()


class LastItemTransitions:
    """First-order Markov baseline: score = count(last item → item) + w · count(item) / max count.

    Transition counts come from consecutive pairs inside each training sequence (never across users). They
    are stored sparsely, as CSR arrays of size O(distinct pairs) <= O(interactions), never as a dense
    V × V matrix, so the baseline fits any catalogue. With ``0 <= w < 1`` the popularity term is below one
    transition, so it only breaks ties between equal transition counts, and it is the whole score when the
    last item has no recorded successor (or the history is empty). Scores are float64 because, in float32,
    a term of w/max_count next to large transition counts would be rounded away.
    """

    def __init__(
        self,
        offsets: np.ndarray,
        items: np.ndarray,
        n_items: int,
        *,
        backoff_weight: float = 0.5,
        item_counts: np.ndarray | None = None,
    ):
        if not 0.0 <= backoff_weight < 1.0:
            raise ValueError(f"backoff_weight must be in [0, 1), got {backoff_weight}")
        n_cols = n_items + 2
        offsets = np.asarray(offsets, dtype=np.int64)
        seq = np.asarray(items, dtype=np.int64)
        # A pair (j, j+1) is a transition unless position j is the last item of its user.
        is_pair = np.ones(max(seq.size - 1, 0), dtype=bool)
        user_last = offsets[1:][np.diff(offsets) > 0] - 1
        is_pair[user_last[user_last < is_pair.size]] = False
        keys = seq[:-1][is_pair] * n_cols + seq[1:][is_pair]
        pairs, counts = np.unique(keys, return_counts=True)
        rows, cols = pairs // n_cols, pairs % n_cols
        indptr = np.zeros(n_cols + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_cols), out=indptr[1:])
        self.n_items = n_items
        self.indptr = torch.as_tensor(indptr)  # Long[V + 1]; row = previous item
        self.indices = torch.as_tensor(cols, dtype=torch.int64)  # Long[nnz]; next item
        self.counts = torch.as_tensor(counts, dtype=torch.float64)  # Float64[nnz]

        popularity = item_counts_from_csr(seq, n_items) if item_counts is None else np.asarray(item_counts)
        pop = torch.as_tensor(popularity, dtype=torch.float64).reshape(-1)[:n_cols].clone()
        pop = pop / pop[1:-1].max().clamp(min=1.0)
        self._backoff = mask_special_((backoff_weight * pop).unsqueeze(0))[0]  # Float64[V]

    @property
    def nnz(self) -> int:
        """Number of distinct (previous, next) pairs stored."""
        return int(self.indices.numel())

    def successors(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """Items seen right after ``item`` in training and how often (ascending item index)."""
        lo, hi = int(self.indptr[item]), int(self.indptr[item + 1])
        return self.indices[lo:hi].numpy(), self.counts[lo:hi].numpy()

    def scores(self, history: Tensor) -> Tensor:
        """Float64[B, V] scores from each history's last column (PAD → popularity only)."""
        device = history.device
        last = history[:, -1].long().cpu().numpy()
        out = self._backoff.to(device).expand(history.shape[0], -1).clone()  # [B, V]
        indptr = self.indptr.numpy()
        flat, rows = _gather_ranges(indptr[last], indptr[last + 1])
        flat_t = torch.as_tensor(flat)
        out.index_put_(
            (torch.as_tensor(rows, device=device), self.indices[flat_t].to(device)),
            self.counts[flat_t].to(device),
            accumulate=True,
        )
        return out


# ------------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class EvalResult:
    """Metrics of one scorer on one split.

    ``metrics`` is :meth:`RankingMetrics.compute` (plus ``sampled_*`` keys when sampled metrics were asked
    for). ``per_user``, when requested, maps column name → array with one entry per evaluated user:
    ``user`` (user index, or row position), ``history_length`` (all seen items), ``n_targets``,
    ``target_popularity`` (mean training count of the user's targets; only with ``item_counts``) and every
    per-user metric (``ndcg@10``, ``hr@10``, ...).
    """

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray] | None = None


def _align(histories: CSR, targets: CSR) -> np.ndarray:
    """History row for each target row, matched by user index when both sides carry users."""
    n_targets = len(targets.offsets) - 1
    if histories.users is not None and targets.users is not None:
        pos = np.searchsorted(histories.users, targets.users)
        pos = np.clip(pos, 0, max(len(histories.users) - 1, 0))
        if len(histories.users) == 0 or not np.array_equal(histories.users[pos], targets.users):
            raise ValueError("some users with targets have no history row")
        return pos.astype(np.int64)
    if len(histories.offsets) - 1 != n_targets:
        raise ValueError(f"{len(histories.offsets) - 1} histories but {n_targets} target rows")
    return np.arange(n_targets, dtype=np.int64)


def _pad(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int, *, left: bool) -> Tensor:
    """Long[B, width] rows of ``items[starts:ends]``, PAD-filled; left padding keeps the most recent items."""
    cols = np.arange(width)
    src = (ends[:, None] - width + cols) if left else (starts[:, None] + cols)
    valid = (src >= starts[:, None]) & (src < ends[:, None])
    out = np.where(valid, items[np.clip(src, 0, max(items.size - 1, 0))] if items.size else 0, PAD)
    return torch.as_tensor(out.astype(np.int64))


def fit_baselines(train: Any, n_items: int) -> dict[str, Scorer]:
    """Most popular and last-item transitions, both fitted on the training sequences ``train`` (anything
    :func:`as_csr` takes): the reference rows every model table is printed next to."""
    csr = as_csr(train)
    counts = item_counts_from_csr(csr.items, n_items)
    return {
        "most_popular": MostPopular(counts, n_items),
        "last_item_transitions": LastItemTransitions(csr.offsets, csr.items, n_items, item_counts=counts),
    }


def evaluate_scorer(
    scorer: Scorer,
    histories: Any,
    targets: Any,
    *,
    ks: Sequence[int],
    n_items: int,
    item_counts: np.ndarray | None = None,
    exclude_seen: bool = True,
    batch_size: int = 512,
    max_len: int | None = None,
    per_user: bool = False,
    sampled_negatives: int | None = None,
    sampled_by: SampleBy = "uniform",
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> EvalResult:
    """Full-ranking evaluation of ``scorer`` on users with targets, in batches of ``batch_size`` users.

    Each batch: histories are left-padded (PAD = 0) keeping the most recent ``max_len`` items (all when
    None) as the scorer's input; PAD/MASK are masked; when ``exclude_seen``, ALL seen items are excluded,
    including those cut off by ``max_len``; the top max(ks) go to :class:`RankingMetrics`.

    Args:
        histories: what the model sees (CSR, ``Sequences`` or list of lists); rows align with ``targets``
            by user index when both carry ``users``, else by position.
        targets: the items to find (same forms); users without targets must be absent.
        item_counts: training counts per item column, for popularity/novelty, popularity sampling and
            ``target_popularity``.
        sampled_negatives: also report ``sampled_*`` metrics against this many sampled negatives.
        generator: torch generator for negative sampling (seed it for reproducible sampled metrics).
    """
    hist, tgt = as_csr(histories), as_csr(targets)
    rows = _align(hist, tgt)
    metrics = RankingMetrics(ks, n_items, item_counts)
    sampled = SampledRankingMetrics(ks) if sampled_negatives else None
    k_max = metrics.ks[-1]
    n_cols = n_items + 2
    columns: dict[str, list[np.ndarray]] = {}
    counts = None if item_counts is None else np.asarray(item_counts, dtype=np.float64).reshape(-1)

    for lo in range(0, len(rows), batch_size):
        batch_rows = rows[lo : lo + batch_size]
        h_start, h_end = hist.offsets[batch_rows], hist.offsets[batch_rows + 1]
        t_start, t_end = (
            tgt.offsets[lo : lo + len(batch_rows)],
            tgt.offsets[lo + 1 : lo + len(batch_rows) + 1],
        )
        h_len = h_end - h_start
        width = max(1, int(h_len.max()) if max_len is None else min(max_len, int(h_len.max())))
        inputs = _pad(hist.items, h_start, h_end, width, left=True).to(device)  # [B, L]
        batch_targets = _pad(tgt.items, t_start, t_end, max(1, int((t_end - t_start).max())), left=False)
        batch_targets = batch_targets.to(device)  # [B, T]

        scores = scorer.scores(inputs)  # [B, V]
        if scores.shape != (len(batch_rows), n_cols):
            raise ValueError(f"scorer returned {tuple(scores.shape)}, expected ({len(batch_rows)}, {n_cols})")
        mask_special_(scores)
        sampled_values: dict[str, np.ndarray] = {}
        seen_flat, seen_rows = _gather_ranges(h_start, h_end)
        seen = (
            torch.as_tensor(seen_rows, device=device),
            torch.as_tensor(hist.items[seen_flat], device=device),
        )
        if sampled is not None and sampled_negatives is not None:
            # Sampled ranks use the raw target scores; negatives avoid every seen item.
            seen_mask = torch.zeros_like(scores, dtype=torch.bool)
            seen_mask.index_put_(seen, torch.tensor(True, device=seen_mask.device))
            ranks = sampled_ranks(
                scores,
                batch_targets,
                sampled_negatives,
                by=sampled_by,
                item_counts=item_counts,
                exclude=seen_mask,
                generator=generator,
            )
            sampled_values = sampled.update(ranks, batch_targets)
        if exclude_seen:
            scores.index_put_(seen, torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device))
        values = metrics.update(topk(scores, k_max), batch_targets, return_per_user=True)

        if per_user:
            n_t = t_end - t_start
            batch_columns: dict[str, np.ndarray] = {
                "user": batch_rows if tgt.users is None else tgt.users[lo : lo + len(batch_rows)],
                "history_length": h_len,
                "n_targets": n_t,
            }
            if counts is not None:
                t_flat, t_rows = _gather_ranges(t_start, t_end)
                sums = np.bincount(t_rows, weights=counts[tgt.items[t_flat]], minlength=len(batch_rows))
                batch_columns["target_popularity"] = sums / np.maximum(n_t, 1)
            batch_columns.update(values)
            batch_columns.update(sampled_values)
            for name, column in batch_columns.items():
                columns.setdefault(name, []).append(np.asarray(column))

    result = metrics.compute()
    if sampled is not None:
        result.update(sampled.compute())
    table = {name: np.concatenate(parts) for name, parts in columns.items()} if per_user else None
    return EvalResult(result, table)
