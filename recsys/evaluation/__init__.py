"""Evaluation: ranking metrics written once (full and sampled), the protocol every scorer is evaluated by,
baselines, per-segment breakdowns.

``breakdown`` and ``popularity`` (polars, matplotlib) are not imported here, so that per-epoch validation
pulls in torch and numpy only; import them as ``recsys.evaluation.breakdown`` / ``.popularity``.
"""

from recsys.evaluation.baselines import LastItemTransitions, MostPopular, fit_baselines, item_counts_from_csr
from recsys.evaluation.metrics import RankingMetrics, per_user_metrics
from recsys.evaluation.protocol import EvalResult, EvalSet, Sampling, Scorer, evaluate, evaluate_batch
from recsys.evaluation.sampled import SampledRankingMetrics, sample_negatives, sampled_per_user, sampled_ranks

__all__ = [
    "EvalResult",
    "EvalSet",
    "LastItemTransitions",
    "MostPopular",
    "RankingMetrics",
    "SampledRankingMetrics",
    "Sampling",
    "Scorer",
    "evaluate",
    "evaluate_batch",
    "fit_baselines",
    "item_counts_from_csr",
    "per_user_metrics",
    "sample_negatives",
    "sampled_per_user",
    "sampled_ranks",
]
