"""Evaluation: ranking metrics written once (full and sampled), baselines, per-segment breakdowns.

``breakdown`` (polars, matplotlib) is not imported here, so that per-epoch validation pulls in torch and
numpy only; import it as ``recsys.evaluation.breakdown``.
"""

from recsys.evaluation.baselines import (
    CSR,
    EvalResult,
    LastItemTransitions,
    MostPopular,
    Scorer,
    as_csr,
    evaluate_scorer,
    item_counts_from_csr,
)
from recsys.evaluation.metrics import (
    RankingMetrics,
    SampledRankingMetrics,
    exclude_items_,
    mask_special_,
    per_user_metrics,
    sample_negatives,
    sampled_per_user,
    sampled_ranks,
    topk,
)

__all__ = [
    "CSR",
    "EvalResult",
    "LastItemTransitions",
    "MostPopular",
    "RankingMetrics",
    "SampledRankingMetrics",
    "Scorer",
    "as_csr",
    "evaluate_scorer",
    "exclude_items_",
    "item_counts_from_csr",
    "mask_special_",
    "per_user_metrics",
    "sample_negatives",
    "sampled_per_user",
    "sampled_ranks",
    "topk",
]
