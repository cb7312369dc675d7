"""Ranking metrics, written once: full ranking over the catalogue, and (labelled) sampled ranking.

Validation during training, the ``evaluate`` pipeline and tuning all call this module, so every number the
project reports comes from the same code.

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

__all__ = [
    "PAD",
    "RankingMetrics",
    "SampleBy",
    "SampledRankingMetrics",
    "exclude_items_",
    "mask_special_",
    "per_user_metrics",
    "sample_negatives",
    "sampled_per_user",
    "sampled_ranks",
    "topk",
]

PAD = 0
NEG_INF = float("-inf")

SampleBy = Literal["uniform", "popularity"]

# Metric families, in the order keys appear in results.
RANK_METRICS = ("ndcg", "hr", "recall", "mrr", "map", "precision")
POPULARITY_METRICS = ("popularity", "novelty")
SAMPLED_METRICS = ("ndcg", "hr", "mrr")


# ------------------------------------------------------------------------------------- score masking
def mask_special_(scores: Tensor) -> Tensor:
    """Set the PAD (column 0) and MASK (column V-1) scores to -inf in place; returns ``scores``."""
    scores[:, PAD] = NEG_INF
    scores[:, -1] = NEG_INF
    return scores


def exclude_items_(scores: Tensor, items: Tensor) -> Tensor:
    """Set ``scores[b, items[b, j]]`` to -inf in place (e.g. already-seen items); returns ``scores``.

    Args:
        scores: Float[B, V] scores.
        items: Long[B, L] item indices, padded with PAD = 0. Padding lands on column 0, the PAD column,
            which is never a valid recommendation (``mask_special_`` sets it to -inf anyway).
    """
    if items.numel():
        scores.scatter_(1, items.long(), NEG_INF)
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
    idx = idx.masked_fill(values == NEG_INF, PAD)
    if k > k_eff:
        idx = torch.cat([idx, idx.new_zeros(n_rows, k - k_eff)], dim=1)
    return idx


# ------------------------------------------------------------------------------------ full ranking
def _check_ks(ks: Sequence[int]) -> list[int]:
    out = sorted(set(int(k) for k in ks))
    if not out or out[0] < 1:
        raise ValueError(f"ks must be a non-empty list of positive integers, got {list(ks)}")
    return out


def _as_2d(targets: Tensor) -> Tensor:
    return (targets.unsqueeze(1) if targets.dim() == 1 else targets).long()


def _sorted_targets(targets: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted targets (duplicates kept, for searchsorted) and the number of distinct real targets."""
    t_sorted = _as_2d(targets).sort(dim=1).values  # [B, T]
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


def _metric_dtype(device: torch.device) -> torch.dtype:
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
    dtype = _metric_dtype(top.device)
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
        top: Long[B, >= k] ranked item lists (PAD = empty slot), e.g. from :func:`topk`.
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
    values = _per_user(top, targets, _check_ks([k]), popularity)
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
        self.ks = _check_ks(ks)
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
            top: Long[B, >= max(ks)] ranked item lists, best first (PAD = empty slot), from :func:`topk`.
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


# ------------------------------------------------------------------------------------------ sampled
def sample_negatives(
    n_users: int,
    n_items: int,
    n_negatives: int,
    *,
    targets: Tensor,
    by: SampleBy = "uniform",
    item_counts: np.ndarray | Tensor | None = None,
    exclude: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Long[B, N] distinct negatives per user, drawn without replacement from the real items.

    A user's negatives never include its targets, the ``exclude`` items, PAD or MASK. ``by="popularity"``
    draws proportionally to ``item_counts`` (so never-seen items are never drawn), as in the BERT4Rec paper.

    Args:
        exclude: Long[B, L] item indices (PAD-padded) or Bool[B, V] mask of items to leave out.
    """
    n_cols = n_items + 2
    if by == "uniform":
        base = torch.ones(n_cols, dtype=torch.float32, device=device)
    elif by == "popularity":
        if item_counts is None:
            raise ValueError("popularity sampling needs item_counts")
        base = torch.as_tensor(np.asarray(item_counts), dtype=torch.float32, device=device).flatten()
        if base.numel() == n_items + 1:
            base = torch.cat([base, base.new_zeros(1)])
    else:
        raise ValueError(f"unknown sampling {by!r}")
    weights = base.expand(n_users, n_cols).clone()  # [B, V]
    weights[:, PAD] = 0.0
    weights[:, -1] = 0.0  # MASK
    if exclude is not None:
        exclude = exclude.to(weights.device)
        if exclude.dtype == torch.bool:
            weights.masked_fill_(exclude, 0.0)
        else:
            weights.scatter_(1, exclude.long(), 0.0)
    weights.scatter_(1, _as_2d(targets).to(weights.device), 0.0)
    eligible = int((weights > 0).sum(1).min()) if n_users else n_negatives
    if eligible < n_negatives:
        raise ValueError(
            f"a user has only {eligible} items to sample from, fewer than {n_negatives} negatives"
        )
    return torch.multinomial(weights, n_negatives, replacement=False, generator=generator)


def sampled_ranks(
    scores: Tensor,
    targets: Tensor,
    n_negatives: int,
    *,
    by: SampleBy = "uniform",
    item_counts: np.ndarray | Tensor | None = None,
    exclude: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Rank (1 = best) of each target among itself and ``n_negatives`` sampled negatives; Long[B, T].

    Pass the scores before seen items are set to -inf (the negatives already avoid them). Each target is
    ranked against the same negatives, independently of the other targets. Ties count against the target
    (rank = 1 + #negatives scoring >= the target), so a constant scorer gets the worst rank rather than the
    best. Padding targets (0) get rank 0. Negatives come from :func:`sample_negatives`.

    Args:
        scores: Float[B, V] scores.
        targets: Long[B, T] (PAD-padded) or Long[B].
        exclude: Long[B, L] seen items (PAD-padded) or Bool[B, V] mask, never used as negatives.
    """
    n_users, n_cols = scores.shape
    t = _as_2d(targets).to(scores.device)
    negatives = sample_negatives(
        n_users,
        n_cols - 2,
        n_negatives,
        targets=t,
        by=by,
        item_counts=item_counts,
        exclude=exclude,
        generator=generator,
        device=scores.device,
    )
    neg_scores = scores.gather(1, negatives)  # [B, N]
    target_scores = scores.gather(1, t)  # [B, T]
    ranks = 1 + (neg_scores.unsqueeze(1) >= target_scores.unsqueeze(2)).sum(2)  # [B, T]
    return ranks.masked_fill(t == PAD, 0)


def _dedup_mask(t: Tensor) -> Tensor:
    """Bool[B, T]: True at the first occurrence of each real target (so repeated targets count once)."""
    t_sorted, order = t.sort(dim=1)
    first = torch.ones_like(t_sorted, dtype=torch.bool)
    first[:, 1:] = t_sorted[:, 1:] != t_sorted[:, :-1]
    keep = torch.empty_like(first)
    keep.scatter_(1, order, first)
    return keep & (t > PAD)


def sampled_per_user(ranks: Tensor, ks: Sequence[int], targets: Tensor | None = None) -> dict[str, Tensor]:
    """Per-user sampled metrics keyed ``sampled_ndcg@k``, ``sampled_hr@k``, ``sampled_mrr@k``; Float[B].

    For one target with sampled rank r: hr@k = [r <= k], ndcg@k = [r <= k] / log2(r + 1),
    mrr@k = [r <= k] / r. A user with several targets gets the mean over its distinct targets.

    Args:
        ranks: Long[B, T] from :func:`sampled_ranks` (0 = padding).
        targets: the targets the ranks belong to; when given, repeated targets count once.
    """
    ks_sorted = _check_ks(ks)
    ranks = _as_2d(ranks)
    valid = ranks > 0 if targets is None else _dedup_mask(_as_2d(targets).to(ranks.device))
    dtype = _metric_dtype(ranks.device)
    n_valid = valid.sum(1).to(dtype)
    if bool((n_valid == 0).any()):
        raise ValueError("every user needs at least one target")
    r = ranks.to(dtype).clamp(min=1.0)
    out: dict[str, Tensor] = {}
    for name in SAMPLED_METRICS:
        for k in ks_sorted:
            within = valid & (ranks <= k)
            if name == "ndcg":
                per_target = 1.0 / torch.log2(r + 1.0)
            elif name == "hr":
                per_target = torch.ones_like(r)
            else:
                per_target = 1.0 / r
            out[f"sampled_{name}@{k}"] = (per_target * within).sum(1) / n_valid
    return out


class SampledRankingMetrics:
    """Streaming accumulator of sampled metrics; every key is prefixed ``sampled_`` so that sampled numbers
    (which inflate full-ranking ones several-fold and can reorder models) are never mistaken for them."""

    def __init__(self, ks: Sequence[int]):
        self.ks = _check_ks(ks)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._sums: dict[str, float] = {}
        self._users = 0

    def update(self, ranks: Tensor, targets: Tensor | None = None) -> dict[str, np.ndarray]:
        """Add a batch of ranks (Long[B, T] from :func:`sampled_ranks`); returns its per-user values."""
        values = sampled_per_user(ranks, self.ks, targets)
        stacked = torch.stack(list(values.values())).to("cpu", torch.float64)  # [M, B]
        for name, total in zip(values, stacked.sum(1).tolist(), strict=True):
            self._sums[name] = self._sums.get(name, 0.0) + total
        self._users += int(ranks.shape[0])
        return {name: stacked[i].numpy() for i, name in enumerate(values)}

    def compute(self) -> dict[str, float]:
        """User-averaged sampled metrics (NaN before any update)."""
        denom = self._users if self._users else math.nan
        names = [f"sampled_{m}@{k}" for m in SAMPLED_METRICS for k in self.ks]
        return {name: self._sums.get(name, math.nan) / denom for name in names}
