"""Sampled metrics: negatives drawn correctly, ranks by hand, labelled, and never below full ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.evaluation.metrics import RankingMetrics
from recsys.evaluation.sampled import SampledRankingMetrics, sample_negatives, sampled_per_user, sampled_ranks
from recsys.inference.topk import mask_special_, topk


def test_negatives_avoid_seen_targets_and_special_columns() -> None:
    gen = torch.Generator().manual_seed(0)
    seen = torch.tensor([[0, 1, 2], [3, 4, 5]])  # PAD-padded histories
    targets = torch.tensor([[6], [7]])
    neg = sample_negatives(2, 10, 5, targets=targets, exclude=seen, generator=gen)  # V = 12
    assert neg.shape == (2, 5)
    for row, banned in zip(neg.tolist(), [{0, 1, 2, 6, 11}, {0, 3, 4, 5, 7, 11}], strict=True):
        assert len(set(row)) == 5  # without replacement
        assert not set(row) & banned
        assert all(1 <= item <= 10 for item in row)


def test_popularity_sampling_never_draws_unseen_items_and_is_seeded() -> None:
    counts = np.array([0, 5, 0, 3, 0, 9, 1, 0])  # n_items = 6; items 2 and 4 never seen
    draw = [
        sample_negatives(
            50,
            6,
            3,
            targets=torch.full((50, 1), 6),
            by="popularity",
            item_counts=counts,
            generator=torch.Generator().manual_seed(1),
        )
        for _ in range(2)
    ]
    assert torch.equal(draw[0], draw[1])
    assert set(draw[0].flatten().tolist()) == {1, 3, 5}  # the only seen items besides the target
    with pytest.raises(ValueError, match="fewer than 4"):
        sample_negatives(1, 6, 4, targets=torch.tensor([6]), by="popularity", item_counts=counts)


def test_sampled_rank_by_hand_ties_count_against_the_target() -> None:
    # n_items = 5, V = 7; target 3 scores 0.7; item 1 is seen, so the negatives are all of {2, 4, 5}
    # (n_negatives = 3 = every eligible item) scoring 0.5, 0.1, 0.7. Item 5 ties with the target and
    # counts against it: rank = 1 + #{0.5, 0.1, 0.7 >= 0.7} = 2.
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.7, 0.1, 0.7, 0.0]])
    ranks = sampled_ranks(scores, torch.tensor([3]), 3, exclude=torch.tensor([[1]]))
    assert ranks.tolist() == [[2]]
    # A constant scorer gets the worst rank, not the best.
    flat = torch.zeros(1, 7)
    assert sampled_ranks(flat, torch.tensor([[3, 0]]), 4).tolist() == [[5, 0]]  # padding gets rank 0


def test_sampled_per_user_by_hand() -> None:
    # ranks 1, 3, 12 at k = 10: hr = 1, 1, 0; ndcg = 1/log2(2), 1/log2(4), 0 = 1, 0.5, 0; mrr = 1, 1/3, 0.
    values = sampled_per_user(torch.tensor([[1], [3], [12]]), [10])
    assert values["sampled_hr@10"].tolist() == [1.0, 1.0, 0.0]
    assert values["sampled_ndcg@10"].tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert values["sampled_mrr@10"].tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    # Two targets: ranks 1 and 20 -> hr@10 = mean(1, 0) = 0.5; a repeated target counts once.
    two = sampled_per_user(torch.tensor([[1, 20, 20]]), [10], targets=torch.tensor([[4, 9, 9]]))
    assert two["sampled_hr@10"].tolist() == [0.5]


def test_keys_are_labelled_sampled() -> None:
    acc = SampledRankingMetrics([1, 10])
    acc.update(torch.tensor([[1], [4]]))
    result = acc.compute()
    assert result and all(name.startswith("sampled_") for name in result)
    assert result["sampled_hr@10"] == 1.0 and result["sampled_hr@1"] == 0.5


def test_sampled_metrics_are_never_below_full_ranking() -> None:
    # With continuous scores (no ties) the sampled rank is at most the full rank for every user, because
    # the negatives are a subset of the items the full ranking competes against.
    gen = torch.Generator().manual_seed(7)
    n_users, n_items = 400, 300
    scores = mask_special_(torch.randn(n_users, n_items + 2, generator=gen))
    seen = torch.randint(1, n_items + 1, (n_users, 20), generator=gen)
    targets = torch.randint(1, n_items + 1, (n_users, 1), generator=gen)
    seen = seen.masked_fill(seen == targets, 0)  # a target is never in its own history here
    ranks = sampled_ranks(scores, targets, 100, exclude=seen, generator=gen)
    sampled = sampled_per_user(ranks, [10])

    full_scores = scores.clone().scatter_(1, seen, float("-inf"))  # PAD (0) is -inf already
    full = RankingMetrics([10], n_items)
    per_user = full.update(topk(full_scores, 10), targets, return_per_user=True)
    for name in ("hr", "ndcg", "mrr"):
        assert (sampled[f"sampled_{name}@10"].numpy() >= per_user[f"{name}@10"] - 1e-12).all()
    assert sampled["sampled_hr@10"].mean() > 2 * per_user["hr@10"].mean()  # and much higher on average
    assert not math.isnan(float(sampled["sampled_ndcg@10"].mean()))
