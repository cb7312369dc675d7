"""A deliberately plain reference implementation of the ranking metrics: loops over users, Python sets.

It shares no code with ``recsys.evaluation.metrics``; the tests check that both agree.
"""

from __future__ import annotations

import math


def reference_metrics(
    tops: list[list[int]],
    targets: list[list[int]],
    ks: list[int],
    n_items: int,
    counts: list[int] | None = None,
) -> dict[str, float]:
    """Metrics of the module docstring, user by user (0 = PAD in both lists)."""
    out: dict[str, float] = {}
    total = sum(counts[1 : n_items + 1]) if counts is not None else 0
    for k in ks:
        sums = {name: 0.0 for name in ("ndcg", "hr", "recall", "mrr", "map", "precision", "pop", "nov")}
        covered: set[int] = set()
        for top, tgt in zip(tops, targets, strict=True):
            relevant = {t for t in tgt if t != 0}
            ranked = top[:k]
            covered |= {r for r in ranked if r != 0}
            hits = [1 if (r != 0 and r in relevant) else 0 for r in ranked]
            dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
            idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
            sums["ndcg"] += dcg / idcg
            sums["hr"] += 1.0 if any(hits) else 0.0
            sums["recall"] += sum(hits) / len(relevant)
            sums["precision"] += sum(hits) / k
            first = next((i for i, h in enumerate(hits) if h), None)
            sums["mrr"] += 0.0 if first is None else 1.0 / (first + 1)
            ap = 0.0
            for i, h in enumerate(hits):
                if h:
                    ap += sum(hits[: i + 1]) / (i + 1)
            sums["map"] += ap / min(len(relevant), k)
            if counts is not None:
                filled = [r for r in ranked if r != 0]
                if filled:
                    sums["pop"] += sum(counts[r] / total for r in filled) / len(filled)
                    sums["nov"] += sum(-math.log2(max(counts[r], 1) / total) for r in filled) / len(filled)
        n = len(tops)
        for name in ("ndcg", "hr", "recall", "mrr", "map", "precision"):
            out[f"{name}@{k}"] = sums[name] / n
        out[f"coverage@{k}"] = len(covered) / n_items
        if counts is not None:
            out[f"popularity@{k}"] = sums["pop"] / n
            out[f"novelty@{k}"] = sums["nov"] / n
    out["users"] = float(len(tops))
    return out


def reference_topk(scores: list[float], k: int) -> list[int]:
    """Best k columns by (score desc, index asc); -inf slots become 0."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))[:k]
    out = [j if scores[j] != float("-inf") else 0 for j in order]
    return out + [0] * (k - len(out))
