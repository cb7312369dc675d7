"""Baselines on a hand table, and the evaluation protocol that scores them (and the model) the same way."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recsys.data.sequences import Sequences
from recsys.evaluation.baselines import LastItemTransitions, MostPopular, item_counts_from_csr
from recsys.evaluation.protocol import Sampling, Scorer, evaluate
from recsys.inference.topk import topk

N_ITEMS = 5  # V = 7: PAD 0, items 1..5, MASK 6
# Hand table, oldest first:  u0: 1 2 3   u1: 2 3 4   u2: 3 1
# counts: item 1: 2, item 2: 2, item 3: 3, item 4: 1, item 5: 0
# transitions (inside users only): 1→2, 2→3 (twice), 3→4, 3→1; never 3→2 (u0 end → u1 start) nor 4→3.
OFFSETS = np.array([0, 3, 6, 8], dtype=np.int64)
ITEMS = np.array([1, 2, 3, 2, 3, 4, 3, 1], dtype=np.int32)
TRAIN = Sequences(np.arange(3, dtype=np.int64), OFFSETS, ITEMS)


def ranking(scorer: Scorer, history: list[int], k: int = 5) -> list[int]:
    return topk(scorer.scores(torch.tensor([history])), k)[0].tolist()


def test_item_counts() -> None:
    assert item_counts_from_csr(ITEMS, N_ITEMS).tolist() == [0, 2, 2, 3, 1, 0, 0]


def test_most_popular_by_hand() -> None:
    model = MostPopular.fit(TRAIN, N_ITEMS)
    scores = model.scores(torch.tensor([[0, 1], [2, 3]]))
    assert scores.shape == (2, N_ITEMS + 2)
    assert torch.isinf(scores[:, [0, 6]]).all()
    # 3 (3 interactions), then 1 and 2 tied at 2 (lower index first), then 4, then 5 (never seen).
    assert ranking(model, [0]) == [3, 1, 2, 4, 5]
    assert isinstance(model, Scorer)


def test_transitions_by_hand() -> None:
    model = LastItemTransitions(TRAIN, N_ITEMS)
    assert model.nnz == 4  # (1,2), (2,3), (3,1), (3,4): stored sparsely
    assert model.indptr.shape == (N_ITEMS + 3,)
    items, counts = model.successors(2)
    assert items.tolist() == [3] and counts.tolist() == [2.0]
    assert model.successors(3)[0].tolist() == [1, 4]
    assert model.successors(4)[0].tolist() == []  # u1 ends at 4; 4→3 would cross users
    # Last item 3: transitions 3→1 and 3→4 once each; the popularity back-off (0.5·count/3) breaks the tie:
    # item 1: 1 + 0.5·2/3 = 1.333, item 4: 1 + 0.5·1/3 = 1.167, then popularity only:
    # item 3: 0.5, item 2: 0.333, item 5: 0.
    scores = model.scores(torch.tensor([[0, 0, 3]]))
    assert scores[0, 1].item() == pytest.approx(1 + 0.5 * 2 / 3)
    assert ranking(model, [0, 0, 3]) == [1, 4, 3, 2, 5]
    # Only the last item matters; no successor of 4 (or an empty history) means pure popularity.
    assert ranking(model, [1, 2, 4]) == [3, 1, 2, 4, 5]
    assert ranking(model, [0, 0, 0]) == [3, 1, 2, 4, 5]
    with pytest.raises(ValueError, match="backoff_weight"):
        LastItemTransitions(TRAIN, N_ITEMS, backoff_weight=1.0)


def test_transitions_tie_break_survives_large_counts() -> None:
    # 100k repetitions of 1→2 and 1→3, item 3 slightly more popular: float32 would lose the back-off.
    seqs = [[1, 2]] * 100_000 + [[1, 3]] * 100_000 + [[3]]
    model = LastItemTransitions(Sequences.from_lists(seqs), 3)
    assert ranking(model, [1], k=2) == [3, 2]


def test_evaluate_most_popular_by_hand() -> None:
    # Seen items excluded, popularity order 3, 1, 2, 4, 5:
    #   u0 saw {1,2,3} -> [4, 5], target 4 at rank 1
    #   u1 saw {2,3,4} -> [1, 5], target 1 at rank 1
    #   u2 saw {3,1}   -> [2, 4, 5], target 5 at rank 3: ndcg@3 = 1/log2(4) = 0.5
    # ndcg@1 = 2/3, hr@3 = 1, ndcg@3 = (1 + 1 + 0.5)/3, coverage@1 = |{4, 1, 2}|/5.
    scorer = MostPopular.fit(TRAIN, N_ITEMS)
    targets = Sequences.from_lists([[4], [1], [5]])
    result = evaluate(scorer, TRAIN, targets, ks=[1, 3], n_items=N_ITEMS, batch_size=2)
    m = result.metrics
    assert m["users"] == 3
    assert m["ndcg@1"] == pytest.approx(2 / 3)
    assert m["hr@3"] == 1.0
    assert m["ndcg@3"] == pytest.approx(2.5 / 3)
    assert m["coverage@1"] == pytest.approx(3 / 5)
    assert result.per_user is None
    # Without exclusion everyone gets [3, 1, 2]: only u1's target (1) is found, at rank 2.
    kept = evaluate(scorer, TRAIN, targets, ks=[3], n_items=N_ITEMS, exclude_seen=False)
    assert kept.metrics["hr@3"] == pytest.approx(1 / 3)
    assert kept.metrics["mrr@3"] == pytest.approx(0.5 / 3)


def test_all_seen_items_are_excluded_beyond_max_len() -> None:
    # u0's input is cut to its last item (3) but 1 and 2 are still excluded, so the transition scorer's
    # favourite (1) never appears: ranking [4, 5].
    scorer = LastItemTransitions(TRAIN, N_ITEMS)
    targets = Sequences.from_lists([[4], [5], [2]])
    result = evaluate(scorer, TRAIN, targets, ks=[2], n_items=N_ITEMS, max_history=1, per_user=True)
    assert result.per_user is not None
    assert result.per_user["hr@2"].tolist() == [1.0, 1.0, 1.0]
    assert result.per_user["history_length"].tolist() == [3, 3, 2]


def test_users_align_and_per_user_columns() -> None:
    targets = Sequences(np.array([0, 2]), np.array([0, 1, 3]), np.array([4, 5, 2]))  # u1 has no target
    result = evaluate(
        MostPopular.fit(TRAIN, N_ITEMS),
        TRAIN,
        targets,
        ks=[3],
        n_items=N_ITEMS,
        item_counts=item_counts_from_csr(ITEMS, N_ITEMS),
        per_user=True,
    )
    table = result.per_user
    assert table is not None
    assert table["user"].tolist() == [0, 2]
    assert table["n_targets"].tolist() == [1, 2]
    # u0 target 4 has 1 interaction; u2 targets {5, 2}: (0 + 2) / 2 = 1.
    assert table["target_popularity"].tolist() == [1.0, 1.0]
    # u2 ranking [2, 4, 5] holds both targets at ranks 1 and 3: recall 1, precision 2/3.
    assert table["recall@3"].tolist() == [1.0, 1.0]
    assert table["precision@3"].tolist() == pytest.approx([1 / 3, 2 / 3])
    assert result.metrics["users"] == 2
    with pytest.raises(ValueError, match="no history"):
        evaluate(
            MostPopular.fit(TRAIN, N_ITEMS),
            Sequences(np.array([0, 1]), OFFSETS[:3], ITEMS[:6]),
            targets,
            ks=[3],
            n_items=N_ITEMS,
        )


class RandomScorer:
    """A fixed random user-independent score table plus a score per last item, like a tiny model."""

    def __init__(self, n_items: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.table = torch.randn(n_items + 2, n_items + 2, generator=gen)

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        return self.table[history[:, -1]].clone()


def test_batch_size_and_sampled_options() -> None:
    rng = np.random.default_rng(0)
    n_items = 60
    histories = Sequences.from_lists(
        rng.integers(1, n_items + 1, size=int(rng.integers(0, 30))).tolist() for _ in range(97)
    )
    targets = Sequences.from_lists(
        rng.integers(1, n_items + 1, size=int(rng.integers(1, 4))).tolist() for _ in range(97)
    )
    scorer = RandomScorer(n_items)
    one = evaluate(scorer, histories, targets, ks=[5, 10], n_items=n_items, batch_size=1)
    many = evaluate(scorer, histories, targets, ks=[5, 10], n_items=n_items, batch_size=40)
    assert one.metrics == pytest.approx(many.metrics)

    sampled = evaluate(
        scorer,
        histories,
        targets,
        ks=[10],
        n_items=n_items,
        sampling=Sampling(20, generator=torch.Generator().manual_seed(0)),
        per_user=True,
    )
    assert sampled.per_user is not None
    assert {"sampled_ndcg@10", "sampled_hr@10", "sampled_mrr@10"} <= set(sampled.metrics)
    assert sampled.per_user["sampled_hr@10"].shape == (97,)
    assert sampled.metrics["ndcg@10"] == pytest.approx(many.metrics["ndcg@10"])  # full metrics unchanged
    assert not math.isnan(sampled.metrics["sampled_ndcg@10"])


def test_scorer_shape_is_checked() -> None:
    class Wrong:
        def scores(self, history: torch.Tensor) -> torch.Tensor:
            return torch.zeros(history.shape[0], 3)

    with pytest.raises(ValueError, match="expected"):
        evaluate(Wrong(), Sequences.from_lists([[1]]), Sequences.from_lists([[2]]), ks=[1], n_items=N_ITEMS)
