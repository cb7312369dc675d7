"""The evaluation protocol, once: score -> exclude seen -> top-k -> metrics, for any scorer.

Per-epoch validation (``BERT4RecModule``), ``recsys evaluate`` (the model and every baseline), tuning and
the benchmarks all evaluate through :func:`evaluate_batch`, whose top-k lists come from the one ranking
path, :func:`recsys.inference.topk.rank`: what a metric counts is exactly what ``recsys recommend`` would
have recommended. Each history is left-padded keeping its most recent ``max_history`` items as the
scorer's input; PAD/MASK are masked; with ``exclude_seen``, ALL seen items are excluded, including those
cut off by ``max_history``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from recsys.data.sequences import Sequences
from recsys.evaluation.metrics import RankingMetrics
from recsys.evaluation.sampled import SampleBy, SampledRankingMetrics, sampled_ranks
from recsys.inference.topk import ScoreFn, TopK, plan_batches, rank

__all__ = ["EvalResult", "EvalSet", "Sampling", "Scorer", "evaluate", "evaluate_batch"]

_NO_CAP = 1 << 30


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores the whole catalogue for a batch of histories (baselines, the Recommender).

    ``scores(history)`` takes Long[B, L] histories, left-padded with PAD = 0 (the most recent item in the
    last column), and returns a new Float[B, V] tensor, V = n_items + 2, that the caller may modify in place.
    """

    def scores(self, history: Tensor) -> Tensor:
        """Float[B, V] scores for Long[B, L] left-padded histories."""
        ...


@dataclass(frozen=True)
class EvalSet:
    """Users with targets: row ``i`` of ``histories`` is what the scorer sees for row ``i`` of ``targets``.

    Build it with :meth:`of`, which aligns the histories to the target users.
    """

    histories: Sequences
    targets: Sequences

    @classmethod
    def of(cls, histories: Sequences, targets: Sequences) -> EvalSet:
        """Histories matched to the target users by user index; every target user needs a history row."""
        if not np.isin(targets.users, histories.users).all():
            raise ValueError("some users with targets have no history row")
        return cls(histories.align(targets.users), targets)

    def __len__(self) -> int:
        return len(self.targets)

    def target_block(self, rows: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
        """Long[B, T]: the targets of ``rows``, right-padded with PAD."""
        width = max(1, int(self.targets.lengths()[rows].max(initial=0)))
        return torch.from_numpy(self.targets.pad(rows, width, side="right")).to(device)


@dataclass(frozen=True)
class Sampling:
    """Sampled metrics beside the full-ranking ones: ``negatives`` per user, drawn ``by`` uniform or
    training popularity (``item_counts``), from ``generator`` (seed it: every scorer gets the same)."""

    negatives: int
    by: SampleBy = "uniform"
    item_counts: np.ndarray | None = None
    generator: torch.Generator | None = None


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one scorer on one split.

    ``metrics`` is :meth:`RankingMetrics.compute` (plus ``sampled_*`` keys when sampled metrics were asked
    for). ``per_user``, when requested, maps column name -> array with one entry per evaluated user:
    ``user``, ``history_length`` (all seen items), ``n_targets``, ``target_popularity`` (mean training count
    of the user's targets; only with ``item_counts``) and every per-user metric (``ndcg@10``, ...).
    ``top``, when requested, holds every user's top-k item indices (int32[users, k], PAD = empty slot).
    """

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray] | None = None
    top: np.ndarray | None = None


def evaluate_batch(
    metrics: RankingMetrics,
    score_fn: ScoreFn,
    data: EvalSet,
    rows: np.ndarray,
    *,
    max_history: int,
    exclude_seen: bool = True,
    device: torch.device | str = "cpu",
    sampling: tuple[Sampling, SampledRankingMetrics] | None = None,
) -> tuple[TopK, dict[str, np.ndarray]]:
    """Rank ``rows`` of ``data`` and add them to ``metrics`` (and the sampled accumulator).

    Returns the batch's top-k lists and per-user metric values (float64[B] per ``name@k``).
    """
    targets = data.target_block(rows, device)  # [B, T]
    sampled: list[dict[str, np.ndarray]] = []

    def sample(chunk: np.ndarray, scores: Tensor) -> None:
        # Raw target scores, before seen items are excluded; the negatives avoid every seen item.
        assert sampling is not None
        spec, accumulator = sampling
        seen = torch.zeros_like(scores, dtype=torch.bool)
        positions, batch_row = data.histories.positions(chunk)
        seen[
            torch.from_numpy(batch_row), torch.from_numpy(data.histories.items[positions].astype(np.int64))
        ] = True
        chunk_targets = data.target_block(chunk, scores.device)
        ranks = sampled_ranks(
            scores,
            chunk_targets,
            spec.negatives,
            by=spec.by,
            item_counts=spec.item_counts,
            exclude=seen,
            generator=spec.generator,
        )
        sampled.append(accumulator.update(ranks, chunk_targets))

    top = rank(
        score_fn,
        data.histories,
        rows,
        metrics.ks[-1],
        max_history=max_history,
        exclude_seen=exclude_seen,
        n_cols=metrics.n_items + 2,
        device=device,
        on_scores=sample if sampling is not None else None,
    )
    values = metrics.update(torch.from_numpy(top.items).to(device), targets, return_per_user=True)
    if sampled:
        values.update({name: np.concatenate([s[name] for s in sampled]) for name in sampled[0]})
    return top, values


def _user_columns(data: EvalSet, rows: np.ndarray, item_counts: np.ndarray | None) -> dict[str, np.ndarray]:
    n_targets = data.targets.lengths()[rows]
    columns = {
        "user": data.targets.users[rows],
        "history_length": data.histories.lengths()[rows],
        "n_targets": n_targets,
    }
    if item_counts is not None:
        counts = np.asarray(item_counts, dtype=np.float64).reshape(-1)
        positions, batch_row = data.targets.positions(rows)
        sums = np.bincount(batch_row, weights=counts[data.targets.items[positions]], minlength=len(rows))
        columns["target_popularity"] = sums / np.maximum(n_targets, 1)
    return columns


def evaluate(
    scorer: Scorer,
    histories: Sequences,
    targets: Sequences,
    *,
    ks: Sequence[int],
    n_items: int,
    item_counts: np.ndarray | None = None,
    exclude_seen: bool = True,
    batch_size: int = 512,
    max_history: int | None = None,
    per_user: bool = False,
    keep_top: bool = False,
    sampling: Sampling | None = None,
    device: torch.device | str = "cpu",
) -> EvalResult:
    """Full-ranking evaluation of ``scorer`` on the users of ``targets``, ``batch_size`` users at a time.

    Args:
        histories: what the scorer sees, matched to ``targets`` by user (see :meth:`EvalSet.of`).
        targets: the items to find; users without targets must be absent.
        item_counts: training counts per item column, for popularity/novelty and ``target_popularity``.
        max_history: most recent items given to the scorer (all when None); exclusion uses them all.
        per_user: also return the per-user table; keep_top: also return every user's top max(ks).
        sampling: also report ``sampled_*`` metrics (see :class:`Sampling`).
    """
    data = EvalSet.of(histories, targets)
    metrics = RankingMetrics(ks, n_items, item_counts)
    sampled = SampledRankingMetrics(ks) if sampling is not None else None
    cap = _NO_CAP if max_history is None else max_history
    # Batches of similar history lengths pad least; per-user outputs are put back in target order.
    plan = plan_batches(data.histories.lengths(), batch_size, max_width=cap)
    columns: dict[str, list[np.ndarray]] = {}
    tops: list[np.ndarray] = []
    for rows in plan:
        top, values = evaluate_batch(
            metrics,
            scorer.scores,
            data,
            rows,
            max_history=cap,
            exclude_seen=exclude_seen,
            device=device,
            sampling=None if sampled is None or sampling is None else (sampling, sampled),
        )
        if keep_top:
            tops.append(top.items)
        if per_user:
            for name, column in {**_user_columns(data, rows, item_counts), **values}.items():
                columns.setdefault(name, []).append(np.asarray(column))
    result = metrics.compute()
    if sampled is not None:
        result.update(sampled.compute())
    back = np.argsort(np.concatenate(plan)) if plan else np.zeros(0, dtype=np.int64)
    return EvalResult(
        result,
        {name: np.concatenate(parts)[back] for name, parts in columns.items()} if per_user else None,
        np.concatenate(tops)[back] if keep_top and tops else None,
    )
