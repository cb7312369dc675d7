"""Sampled ranking metrics: each target ranked against a few sampled negatives instead of the catalogue.

Reported only when asked for (``eval.sampled_negatives``) and always under ``sampled_*`` names: sampled
numbers inflate full-ranking ones several-fold and can reorder models, so they are never mistaken for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from recsys.data.sequences import PAD
from recsys.evaluation.metrics import as_2d, check_ks, metric_dtype

__all__ = ["SampleBy", "SampledRankingMetrics", "sample_negatives", "sampled_per_user", "sampled_ranks"]

SampleBy = Literal["uniform", "popularity"]
SAMPLED_METRICS = ("ndcg", "hr", "mrr")


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
    weights.scatter_(1, as_2d(targets).to(weights.device), 0.0)
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
    t = as_2d(targets).to(scores.device)
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
    ks_sorted = check_ks(ks)
    ranks = as_2d(ranks)
    valid = ranks > 0 if targets is None else _dedup_mask(as_2d(targets).to(ranks.device))
    dtype = metric_dtype(ranks.device)
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
        self.ks = check_ks(ks)
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
