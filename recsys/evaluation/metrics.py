"""Ranking metrics, written once: full ranking over the catalogue, and (labelled) sampled ranking.

Validation during training, the ``evaluate`` pipeline and tuning all call this module (through
:mod:`recsys.evaluation.protocol`), so every number the project reports comes from the same code. The
top-k lists come from the one ranking path, :func:`recsys.inference.topk.rank`; the sampled metrics are in
:mod:`recsys.evaluation.sampled`.

Item columns follow docs/CONTRACTS.md: PAD = 0, real items 1..n_items, MASK = n_items + 1, V = n_items + 2.
A top-k list may hold PAD (0) in a slot when fewer than k items could be ranked (everything else was
excluded); such a slot is an empty recommendation: never a hit, and not counted by coverage, popularity or
novelty.

Full-ranking definitions, for one user with target set G (the distinct real items among the targets,
padding dropped, n = |G| >= 1) and ranked list r_1..r_k, with rel_i = 1 if r_i is in G else 0:

    hr@k         = 1 if sum_{i<=k} rel_i > 0 else 0
    recall@k     = sum_{i<=k} rel_i / n                        (equals hr@k when n == 1)
    precision@k  = sum_{i<=k} rel_i / k                        (empty slots count as misses)
    ndcg@k       = DCG@k / IDCG@k,  DCG@k = sum_{i<=k} rel_i / log2(i + 1),
                   IDCG@k = sum_{i<=min(n, k)} 1 / log2(i + 1)  (binary relevance)
    mrr@k        = 1 / i for the first i <= k with rel_i = 1, else 0
    map@k        = sum_{i<=k} rel_i * precision@i / min(n, k)
    popularity@k = mean over the user's non-empty slots of c(r_i) / C   (0 when every slot is empty)
    novelty@k    = mean over the user's non-empty slots of -log2(max(c(r_i), 1) / C)

where c(j) is item j's training-interaction count and C = sum_j c(j); a never-seen item is treated as seen
once by novelty so that the value stays finite. Each of these is averaged over users, every user weighing
the same. One metric is not per user:

    coverage@k   = |union over all users of {r_1..r_k} minus PAD| / n_items
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, overload

import numpy as np
import torch
from torch import Tensor

from recsys.data.sequences import PAD

__all__ = ["PAD", "RankingMetrics", "as_2d", "check_ks", "metric_dtype", "per_user_metrics"]

# Metric families, in the order keys appear in results.
RANK_METRICS = ("ndcg", "hr", "recall", "mrr", "map", "precision")
POPULARITY_METRICS = ("popularity", "novelty")


# ------------------------------------------------------------------------------------ full ranking
def check_ks(ks: Sequence[int]) -> list[int]:
    out = sorted(set(int(k) for k in ks))
    if not out or out[0] < 1:
        raise ValueError(f"ks must be a non-empty list of positive integers, got {list(ks)}")
    return out


def as_2d(targets: Tensor) -> Tensor:
    return (targets.unsqueeze(1) if targets.dim() == 1 else targets).long()


def _sorted_targets(targets: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted targets (duplicates kept, for searchsorted) and the number of distinct real targets."""
    t_sorted = as_2d(targets).sort(dim=1).values  # [B, T]
    first = torch.ones_like(t_sorted, dtype=torch.bool)
    first[:, 1:] = t_sorted[:, 1:] != t_sorted[:, :-1]
    n_targets = (first & (t_sorted > PAD)).sum(1)  # [B]
    if bool((n_targets == 0).any()):
        raise ValueError("every user needs at least one target (a row of targets is all padding)")
    return t_sorted, n_targets


def _hits(top: Tensor, t_sorted: Tensor) -> Tensor:
    """Bool[B, K]: whether each recommended item is a target."""
    if top.shape[1] * t_sorted.shape[1] <= 4096:  # short target lists: one broadcast compare is fastest
        match = (top.unsqueeze(2) == t_sorted.unsqueeze(1)).any(2)  # [B, K, T] -> [B, K]
    else:  # long target lists (temporal splits): binary search, O(B·K·log T) time and no B·K·T tensor
        top = top.contiguous()
        pos = torch.searchsorted(t_sorted, top).clamp_(max=t_sorted.shape[1] - 1)
        match = t_sorted.gather(1, pos) == top
    return match & (top > PAD)


def _popularity_tables(item_counts: np.ndarray | Tensor | None, n_items: int) -> tuple[Tensor, Tensor] | None:
    """Per-column popularity share c/C and self-information -log2(max(c,1)/C), float64[V]."""
    if item_counts is None:
        return None
    counts = torch.as_tensor(np.asarray(item_counts), dtype=torch.float64).flatten()
    n_cols = n_items + 2
    if counts.numel() == n_items + 1:  # accept counts without the MASK column
        counts = torch.cat([counts, counts.new_zeros(1)])
    if counts.numel() != n_cols:
        raise ValueError(f"item_counts has {counts.numel()} entries, expected n_items + 2 = {n_cols}")
    counts[PAD] = 0.0
    counts[-1] = 0.0
    total = float(counts.sum())
    if total <= 0:
        raise ValueError("item_counts sums to zero")
    share = counts / total
    info = -torch.log2(counts.clamp(min=1.0) / total)
    return share, info


def metric_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps 1M-user sums exact enough; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _per_user(
    top: Tensor, targets: Tensor, ks: list[int], popularity: tuple[Tensor, Tensor] | None
) -> dict[str, Tensor]:
    """Per-user values of every per-user metric at every k, as Float[B] tensors keyed ``name@k``."""
    k_max = ks[-1]
    if top.dim() != 2 or top.shape[1] < k_max:
        raise ValueError(f"top-k lists must be [B, >= {k_max}], got {tuple(top.shape)}")
    if top.shape[0] != targets.shape[0]:
        raise ValueError(f"{top.shape[0]} top-k rows but {targets.shape[0]} target rows")
    top = top[:, :k_max].long()
    dtype = metric_dtype(top.device)
    t_sorted, n_targets = _sorted_targets(targets.to(top.device))
    hit = _hits(top, t_sorted).to(dtype)  # [B, K]

    ranks = torch.arange(1, k_max + 1, device=top.device, dtype=dtype)  # [K]
    discount = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = hit.cumsum(1)
    cum_dcg = (hit * discount).cumsum(1)
    cum_ap = (hit * cum_hits / ranks).cumsum(1)  # sum of precision@i at hit positions
    ideal_dcg = discount.cumsum(0)
    any_hit = hit.any(1)
    first_hit = torch.where(any_hit, hit.argmax(1), k_max)  # argmax returns the first maximum
    first_rr = torch.where(any_hit, 1.0 / (first_hit + 1).to(dtype), 0.0)

    out: dict[str, Tensor] = {}
    n_float = n_targets.to(dtype)
    for k in ks:
        j = k - 1
        n_at_k = n_targets.clamp(max=k)
        out[f"ndcg@{k}"] = cum_dcg[:, j] / ideal_dcg[n_at_k - 1]
        out[f"hr@{k}"] = (cum_hits[:, j] > 0).to(dtype)
        out[f"recall@{k}"] = cum_hits[:, j] / n_float
        out[f"mrr@{k}"] = torch.where(first_hit < k, first_rr, 0.0)
        out[f"map@{k}"] = cum_ap[:, j] / n_at_k.to(dtype)
        out[f"precision@{k}"] = cum_hits[:, j] / k
    if popularity is not None:
        share, info = (t.to(device=top.device, dtype=dtype) for t in popularity)
        filled = (top > PAD).to(dtype)
        cum_filled = filled.cumsum(1).clamp(min=1.0)
        cum_share = (share[top] * filled).cumsum(1)
        cum_info = (info[top] * filled).cumsum(1)
        for k in ks:
            out[f"popularity@{k}"] = cum_share[:, k - 1] / cum_filled[:, k - 1]
            out[f"novelty@{k}"] = cum_info[:, k - 1] / cum_filled[:, k - 1]
    return _ordered(out, ks)


def _ordered(values: dict[str, Tensor], ks: list[int]) -> dict[str, Tensor]:
    """Metric-major key order (ndcg@1, ndcg@5, ..., hr@1, ...) so logs read by family."""
    names = [*RANK_METRICS, *POPULARITY_METRICS]
    return {f"{m}@{k}": values[f"{m}@{k}"] for m in names for k in ks if f"{m}@{k}" in values}


def per_user_metrics(
    top: Tensor,
    targets: Tensor,
    k: int,
    *,
    n_items: int | None = None,
    item_counts: np.ndarray | Tensor | None = None,
) -> dict[str, np.ndarray]:
    """Per-user values at one cut-off: float64[B] keyed ``ndcg``, ``hr``, ``recall``, ``mrr``, ``map``,
    ``precision`` (and ``popularity``, ``novelty`` with ``item_counts``); see the module docstring.

    For several cut-offs at once (keys ``ndcg@10`` ...), use ``RankingMetrics.update(...,
    return_per_user=True)``.

    Args:
        top: Long[B, >= k] ranked item lists (PAD = empty slot), e.g. from :func:`recsys.inference.topk.rank`.
        targets: Long[B, T] or Long[B] target items, padded with PAD = 0.
        k: cut-off.
        n_items: number of real items; needed only with ``item_counts``.
        item_counts: training counts per item column (V entries) for popularity and novelty.
    """
    popularity = None
    if item_counts is not None:
        if n_items is None:
            raise ValueError("n_items is required with item_counts")
        popularity = _popularity_tables(item_counts, n_items)
    values = _per_user(top, targets, check_ks([k]), popularity)
    suffix = f"@{k}"
    return {name.removesuffix(suffix): v.to("cpu", torch.float64).numpy() for name, v in values.items()}


class RankingMetrics:
    """Streaming accumulator of the full-ranking metrics in the module docstring.

    Feed it batch by batch (``update``) and read the user averages with ``compute``; memory is O(len(ks)·V)
    for coverage whatever the number of users, so it serves per-epoch validation and 1M-user evaluation.

    Args:
        ks: cut-offs; results hold every metric at every k.
        n_items: number of real items (V = n_items + 2); the coverage denominator.
        item_counts: training-interaction counts per item column (n_items + 2 entries; PAD/MASK ignored).
            Without it, popularity@k and novelty@k are not reported.
    """

    def __init__(self, ks: Sequence[int], n_items: int, item_counts: np.ndarray | Tensor | None = None):
        if n_items < 1:
            raise ValueError(f"n_items must be positive, got {n_items}")
        self.ks = check_ks(ks)
        self.n_items = n_items
        self._popularity = _popularity_tables(item_counts, n_items)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far (call at the start of each validation epoch)."""
        self._sums: dict[str, float] = {}
        self._users = 0
        self._covered: Tensor | None = None  # Bool[len(ks), V] on the device of the top-k lists

    @overload
    def update(self, top: Tensor, targets: Tensor, *, return_per_user: Literal[False] = ...) -> None: ...
    @overload
    def update(
        self, top: Tensor, targets: Tensor, *, return_per_user: Literal[True]
    ) -> dict[str, np.ndarray]: ...
    def update(
        self, top: Tensor, targets: Tensor, *, return_per_user: bool = False
    ) -> dict[str, np.ndarray] | None:
        """Add a batch of users.

        Args:
            top: Long[B, >= max(ks)] ranked item lists, best first (PAD = empty slot), e.g. from
                :func:`recsys.inference.topk.rank`.
            targets: Long[B, T] target items padded with PAD = 0 (T >= 1), or Long[B].
            return_per_user: also return this batch's per-user values (float64[B] per ``name@k``).
        """
        values = _per_user(top, targets, self.ks, self._popularity)
        # One transfer per batch: sums are taken in float64 on the CPU.
        stacked = torch.stack(list(values.values())).to("cpu", torch.float64)  # [M, B]
        for name, total in zip(values, stacked.sum(1).tolist(), strict=True):
            self._sums[name] = self._sums.get(name, 0.0) + total
        self._users += int(top.shape[0])

        if self._covered is None:
            self._covered = torch.zeros(len(self.ks), self.n_items + 2, dtype=torch.bool, device=top.device)
        top = top.to(self._covered.device).long()
        for i, k in enumerate(self.ks):
            self._covered[i, top[:, :k].reshape(-1)] = True
        if return_per_user:
            return {name: stacked[i].numpy() for i, name in enumerate(values)}
        return None

    def merge(self, other: RankingMetrics) -> None:
        """Add another accumulator's users (e.g. from another process or shard) into this one."""
        if other.ks != self.ks or other.n_items != self.n_items:
            raise ValueError("cannot merge RankingMetrics with different ks or n_items")
        for name, total in other._sums.items():
            self._sums[name] = self._sums.get(name, 0.0) + total
        self._users += other._users
        if other._covered is not None:
            theirs = other._covered
            if self._covered is None:
                self._covered = theirs.clone()
            else:
                self._covered |= theirs.to(self._covered.device)

    @property
    def users(self) -> int:
        """Users accumulated so far."""
        return self._users

    def sums(self) -> dict[str, float]:
        """Per-user metric sums so far, keyed ``ndcg@10`` ... (divide by :attr:`users` for the means; summing
        them over disjoint shards first gives the means over all users, as DDP validation does)."""
        return dict(self._sums)

    def compute(self) -> dict[str, float]:
        """User-averaged metrics keyed ``ndcg@10`` ... ``coverage@k``, plus ``users``; NaN before updates."""
        names = [f"{m}@{k}" for m in RANK_METRICS for k in self.ks]
        if self._popularity is not None:
            names += [f"{m}@{k}" for m in POPULARITY_METRICS for k in self.ks]
        denom = self._users if self._users else math.nan
        out = {name: self._sums.get(name, math.nan) / denom for name in names}
        for i, k in enumerate(self.ks):
            if self._covered is None:
                out[f"coverage@{k}"] = math.nan
            else:
                real = self._covered[i, 1:-1]  # PAD and MASK are not items
                out[f"coverage@{k}"] = int(real.sum()) / self.n_items
        out["users"] = float(self._users)
        return out
