"""Full-ranking metrics: hand-computed examples, then agreement with the plain reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.evaluation.metrics import RankingMetrics, per_user_metrics
from recsys.inference.topk import mask_special_, topk
from tests.evaluation.reference import reference_metrics

INF = float("-inf")


def run(
    tops: list[list[int]],
    targets: list[list[int]],
    ks: list[int],
    n_items: int,
    counts: list[int] | None = None,
) -> dict[str, float]:
    metrics = RankingMetrics(ks, n_items, None if counts is None else np.array(counts))
    metrics.update(torch.tensor(tops), torch.tensor(targets))
    return metrics.compute()


# ------------------------------------------------------------------------------------ hand examples
def test_single_target_by_hand() -> None:
    # top = [3, 7, 5], target 7 at rank 2.
    # hr@1 = 0, hr@3 = 1; ndcg@3 = 1/log2(3) = 0.6309; mrr@3 = 1/2; recall@3 = 1; precision@3 = 1/3;
    # map@3 = precision@2 / min(1, 3) = 1/2.
    m = run([[3, 7, 5]], [[7]], [1, 3], n_items=9)
    assert m["hr@1"] == 0.0 and m["ndcg@1"] == 0.0 and m["mrr@1"] == 0.0
    assert m["hr@3"] == 1.0
    assert m["ndcg@3"] == pytest.approx(1 / math.log2(3))
    assert m["mrr@3"] == pytest.approx(0.5)
    assert m["recall@3"] == 1.0
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["map@3"] == pytest.approx(0.5)
    assert m["users"] == 1.0


def test_two_targets_by_hand() -> None:
    # targets {2, 5}; top = [2, 9, 5, 4]: hits at ranks 1 and 3.
    # ndcg@4 = (1/log2 2 + 1/log2 4) / (1/log2 2 + 1/log2 3) = 1.5 / 1.63093 = 0.91972
    # ndcg@2 = 1 / 1.63093 = 0.61315;  ndcg@1 = 1 / 1 (ideal over min(2, 1) = 1 slot) = 1
    # recall@4 = 2/2, recall@1 = 1/2; precision@4 = 2/4, precision@1 = 1
    # map@4 = (1/1 + 2/3) / min(2, 4) = 0.83333;  map@1 = (1/1) / min(2, 1) = 1;  mrr = 1
    m = run([[2, 9, 5, 4]], [[2, 5]], [1, 2, 4], n_items=9)
    ideal2 = 1 + 1 / math.log2(3)
    assert m["ndcg@4"] == pytest.approx(1.5 / ideal2)
    assert m["ndcg@2"] == pytest.approx(1 / ideal2)
    assert m["ndcg@1"] == pytest.approx(1.0)
    assert m["recall@4"] == 1.0 and m["recall@1"] == 0.5
    assert m["precision@4"] == 0.5 and m["precision@1"] == 1.0
    assert m["map@4"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["map@1"] == pytest.approx(1.0)
    assert m["mrr@4"] == 1.0 and m["hr@4"] == 1.0


def test_padding_and_duplicate_targets_count_once() -> None:
    # [5, 5, 0] is the target set {5}: recall@2 = 1/1, not 2/2 or 1/2; and PAD never matches PAD.
    m = run([[5, 0]], [[5, 5, 0]], [2], n_items=6)
    assert m["recall@2"] == 1.0 and m["ndcg@2"] == 1.0 and m["map@2"] == 1.0
    m = run([[4, 0]], [[3, 0]], [2], n_items=6)  # empty slot (PAD) vs padded targets: no hit
    assert m["hr@2"] == 0.0 and m["precision@2"] == 0.0


def test_coverage_popularity_novelty_by_hand() -> None:
    # n_items = 5, counts of items 1..5 = [4, 2, 1, 1, 0] (C = 8).
    counts = [0, 4, 2, 1, 1, 0, 0]
    # user A: [1, 5] ; user B: [2, 0] (one empty slot).
    # coverage@1 = |{1, 2}| / 5 = 0.4; coverage@2 = |{1, 2, 5}| / 5 = 0.6 (PAD not counted)
    # popularity@2: A = (4/8 + 0/8) / 2 = 0.25, B = (2/8) / 1 = 0.25 -> 0.25
    # novelty@2: A = (-log2(4/8) - log2(1/8)) / 2 = (1 + 3) / 2 = 2 (item 5 counted as seen once),
    #            B = -log2(2/8) = 2 -> 2
    # popularity@1 = (0.5 + 0.25) / 2 = 0.375; novelty@1 = (1 + 2) / 2 = 1.5
    m = run([[1, 5], [2, 0]], [[3], [3]], [1, 2], n_items=5, counts=counts)
    assert m["coverage@1"] == pytest.approx(0.4)
    assert m["coverage@2"] == pytest.approx(0.6)
    assert m["popularity@2"] == pytest.approx(0.25)
    assert m["novelty@2"] == pytest.approx(2.0)
    assert m["popularity@1"] == pytest.approx(0.375)
    assert m["novelty@1"] == pytest.approx(1.5)


def test_keys_follow_the_contract() -> None:
    m = RankingMetrics([10], n_items=20, item_counts=np.ones(22))
    m.update(torch.arange(1, 11).unsqueeze(0), torch.tensor([[3]]))
    expected = {"ndcg", "hr", "recall", "mrr", "map", "precision", "coverage", "popularity", "novelty"}
    assert set(m.compute()) == {f"{name}@10" for name in expected} | {"users"}
    assert "popularity@10" not in RankingMetrics([10], n_items=20).compute()


# ----------------------------------------------------------------------------- reference agreement
def random_case(
    rng: np.random.Generator, n_users: int, n_items: int, k_max: int, max_targets: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Random top-k lists (some with empty tail slots) and padded, possibly repeated, targets."""
    tops: list[list[int]] = []
    targets: list[list[int]] = []
    for _ in range(n_users):
        ranked = rng.permutation(np.arange(1, n_items + 1))[:k_max].tolist()
        ranked += [0] * (k_max - len(ranked))  # small catalogues leave empty slots
        if rng.random() < 0.2:  # some users with empty tail slots
            cut = int(rng.integers(0, k_max))
            ranked = ranked[:cut] + [0] * (k_max - cut)
        n_t = int(rng.integers(1, max_targets + 1))
        tgt = rng.integers(1, n_items + 1, size=n_t).tolist()  # may repeat
        tgt += [0] * int(rng.integers(0, 3))  # padding
        targets.append(tgt)
        tops.append(ranked)
    width = max(len(t) for t in targets)
    targets = [t + [0] * (width - len(t)) for t in targets]
    return tops, targets


@pytest.mark.parametrize(("seed", "max_targets"), [(0, 1), (1, 4), (2, 30)])
def test_matches_reference_on_random_data(seed: int, max_targets: int) -> None:
    rng = np.random.default_rng(seed)
    n_items, ks = 40, [1, 3, 10, 20]
    tops, targets = random_case(rng, 300, n_items, 20, max_targets)
    counts = [0, *rng.integers(0, 50, size=n_items).tolist(), 0]
    metrics = RankingMetrics(ks, n_items, np.array(counts))
    for lo in range(0, 300, 64):  # streaming over uneven batches
        metrics.update(torch.tensor(tops[lo : lo + 64]), torch.tensor(targets[lo : lo + 64]))
    got = metrics.compute()
    want = reference_metrics(tops, targets, ks, n_items, counts)
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_long_target_lists_use_the_same_definitions() -> None:
    # 300 targets x 20 slots takes the binary-search path instead of the broadcast compare.
    rng = np.random.default_rng(3)
    tops, targets = random_case(rng, 50, 500, 20, 300)
    got = RankingMetrics([5, 20], 500)
    got.update(torch.tensor(tops), torch.tensor(targets))
    want = reference_metrics(tops, targets, [5, 20], 500)
    for name, value in want.items():
        assert got.compute()[name] == pytest.approx(value, abs=1e-6), name


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 12), n_items=st.integers(1, 15))
def test_matches_reference_property(seed: int, n_users: int, n_items: int) -> None:
    rng = np.random.default_rng(seed)
    tops, targets = random_case(rng, n_users, n_items, 6, 5)
    counts = [0, *rng.integers(0, 5, size=n_items).tolist(), 0]
    if sum(counts) == 0:
        counts[1] = 1
    got = run(tops, targets, [1, 2, 6], n_items, counts)
    for name, value in reference_metrics(tops, targets, [1, 2, 6], n_items, counts).items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_per_user_vectors_average_to_compute() -> None:
    rng = np.random.default_rng(4)
    tops, targets = random_case(rng, 100, 30, 10, 3)
    counts = np.arange(32)
    metrics = RankingMetrics([5, 10], 30, counts)
    returned = metrics.update(torch.tensor(tops), torch.tensor(targets), return_per_user=True)
    overall = metrics.compute()
    assert len(returned) == 2 * 8  # 8 per-user metrics (coverage is not per user) at 2 cut-offs
    for name, values in returned.items():
        assert values.shape == (100,)
        assert values.mean() == pytest.approx(overall[name])
    for k in (5, 10):
        single = per_user_metrics(
            torch.tensor(tops), torch.tensor(targets), k, n_items=30, item_counts=counts
        )
        assert set(single) == {"ndcg", "hr", "recall", "mrr", "map", "precision", "popularity", "novelty"}
        for name, values in single.items():
            np.testing.assert_allclose(values, returned[f"{name}@{k}"])


def test_merge_equals_one_accumulator() -> None:
    rng = np.random.default_rng(5)
    tops, targets = random_case(rng, 80, 25, 10, 2)
    whole, a, b = (RankingMetrics([10], 25) for _ in range(3))
    whole.update(torch.tensor(tops), torch.tensor(targets))
    a.update(torch.tensor(tops[:30]), torch.tensor(targets[:30]))
    b.update(torch.tensor(tops[30:]), torch.tensor(targets[30:]))
    a.merge(b)
    assert a.compute() == pytest.approx(whole.compute())
    a.reset()
    assert a.users == 0 and math.isnan(a.compute()["ndcg@10"])


def test_rejects_bad_input() -> None:
    metrics = RankingMetrics([10], 20)
    with pytest.raises(ValueError, match="at least one target"):
        metrics.update(torch.arange(1, 11).repeat(2, 1), torch.tensor([[3], [0]]))
    with pytest.raises(ValueError, match=r"\[B, >= 10\]"):
        metrics.update(torch.arange(1, 6).unsqueeze(0), torch.tensor([[3]]))
    with pytest.raises(ValueError, match="n_items \\+ 2"):
        RankingMetrics([10], 20, item_counts=np.ones(5))
    with pytest.raises(ValueError, match="positive"):
        RankingMetrics([0], 20)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(6)
    scores = mask_special_(torch.randn(256, 502, generator=gen))
    seen = torch.randint(0, 501, (256, 30), generator=gen, dtype=torch.int32)
    targets = torch.randint(1, 501, (256, 2), generator=gen)
    results = []
    for device in ("cpu", "cuda"):
        metrics = RankingMetrics([1, 10, 50], 500, np.arange(502))
        s = scores.to(device).scatter_(1, seen.to(device).long(), float("-inf"))  # seen items excluded
        metrics.update(topk(s, 50), targets.to(device))
        results.append(metrics.compute())
    assert results[1] == pytest.approx(results[0], abs=1e-9)
