"""The dataset shapes of ``bench_train_epoch.py``, their training configurations, and analytic FLOPs.

* ``ml1m``: the real ML-1M (``../shared/data/ml-1m/ml-1m.txt``) at the published configuration: hidden
  64, 2 blocks, 2 heads, max_len 200, batch 128, mask probability 0.2, no last-item masking, absolute
  positions only (no relative attention), two threads.
* ``ecommerce``: the seeded synthetic generator at the shape of an Amazon review set: 40,226 users,
  54,542 items, 8.8 events per user (at least 5), every item present, power-law popularity; max_len 50,
  otherwise the library defaults (batch 128, last-item 0.2, relative attention; dropout and mask_prob
  auto: 0.3 and 0.5 at 5 training events per item), one thread
  (``--batch 64`` for the batch the shape was first measured with).
* ``large``: the same model over a 1,000,000-item catalogue (100,000 users, 25 events each).

``--smoke`` shrinks each shape to a few hundred users so the suite can run it in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import shared_data


@dataclass(frozen=True)
class Shape:
    """A benchmark shape: where its log comes from and the config overrides it trains with."""

    name: str
    threads: int
    reference: str  # "plain": PlainBERT4Rec; "softmax": this project's own full-softmax path
    synthetic: dict[str, Any] | None  # SyntheticSpec fields, or None for the real ML-1M
    sets: dict[str, Any] = field(default_factory=dict)


_RECIPE = {  # the short-sequence shapes: the library defaults (batch 128, last-item 0.2, sliding
    # windows; dropout and mask_prob auto: 0.3 and 0.5 at 5 training events per item) at the max_len
    # the e-commerce shape trained with
    "model.max_len": 50,
}
_ECOMMERCE = {"n_users": 40_226, "n_items": 54_542, "n_interactions": 353_989, "min_user_events": 5}
_LARGE = {"n_users": 100_000, "n_items": 1_000_000, "n_interactions": 2_500_000, "min_user_events": 5}

SHAPES = {
    "ml1m": Shape(
        "ml1m",
        threads=2,
        reference="plain",
        synthetic=None,
        sets={
            "model.max_len": 200,
            "masking.mask_prob": 0.2,
            "masking.last_item_prob": 0.0,
            "train.batch_size": 128,
            "model.relative_attention": False,  # the published model: absolute positions only
        },
    ),
    "ecommerce": Shape("ecommerce", 1, "softmax", {**_ECOMMERCE, "min_item_events": 1}, _RECIPE),
    "large": Shape("large", 1, "softmax", {**_LARGE, "min_item_events": 1}, _RECIPE),
}

SMOKE = {  # a few hundred users: the code paths of each shape in seconds
    "ml1m": {
        "n_users": 700,
        "n_items": 400,
        "n_interactions": 14_000,
        "min_user_events": 5,
        "min_item_events": 1,
    },
    "ecommerce": {
        "n_users": 400,
        "n_items": 3_000,
        "n_interactions": 3_520,
        "min_user_events": 5,
        "min_item_events": 1,
    },
    "large": {
        "n_users": 400,
        "n_items": 30_000,
        "n_interactions": 32_000,
        "min_user_events": 5,
        "min_item_events": 1,
    },
}


def runtime_key(name: str) -> str:
    """``train.threads`` / ``train.precision``, or ``runtime.*`` where the config has a runtime section."""
    from recsys.config import RecsysConfig

    return f"runtime.{name}" if "runtime" in RecsysConfig.model_fields else f"train.{name}"


# ML-1M's size as a synthetic log (for --items): 6,040 users, 165 events each, at least 20.
_ML1M_SYNTHETIC = {"n_users": 6_040, "n_interactions": 999_611, "min_user_events": 20, "min_item_events": 1}


def source_sets(shape: Shape, work: Path, smoke: bool, items: int | None = None) -> dict[str, Any]:
    """The ``data.*`` overrides of a shape, writing its synthetic log under ``work`` if it has one.

    ``items`` changes the catalogue size of a synthetic shape; for ``ml1m`` it switches to a synthetic
    log of ML-1M's size and history lengths with that many items.
    """
    spec = SMOKE[shape.name] if smoke else shape.synthetic
    if items is not None:
        spec = {**(spec or _ML1M_SYNTHETIC), "n_items": items}
    if spec is None:
        return {
            "data.source.path": str(shared_data() / "ml-1m" / "ml-1m.txt"),
            "data.source.format": "sasrec_txt",
            "data.source.columns.user": "user_id",
            "data.source.columns.item": "item_id",
            "data.source.columns.timestamp": "null",
        }
    from recsys.data.synthetic import write_log

    return {"data.source.path": str(write_log(work / "log.parquet", seed=0, **spec))}


def step_flops(b: int, width: int, targets: int, d: int, n_layers: int, ff: int, scored: int) -> float:
    """Matmul FLOPs of one training step of this project's BERT4Rec, forward + backward (= 3 x forward).

    As ``BERT4Rec.hidden_at`` computes them: every block's projections and attention on all ``b x
    width`` positions, except that the last block's feed-forward, the output head and the scoring
    against ``scored`` candidates (the catalogue, or the N shared negatives + the positive) run on the
    ``targets`` masked rows only. Counts multiply-adds of Linear layers, attention and scoring as 2 FLOPs.
    """
    tokens = b * width
    projections = 4 * d * d  # q, k, v and the attention output, per position
    attention = 2 * width * d  # q.k over the keys and the weighted sum of values, per query
    feed_forward = 2 * ff * d * d
    macs = n_layers * tokens * (projections + attention) + (n_layers - 1) * tokens * feed_forward
    macs += targets * (feed_forward + d * d + scored * d)
    return 3.0 * 2.0 * macs


def plain_step_flops(b: int, width: int, d: int, n_layers: int, ff: int, vocab: int) -> float:
    """The same count for :class:`plain_bert4rec.PlainBERT4Rec`, which computes every position."""
    tokens = b * width
    per_token = n_layers * (4 * d * d + 2 * width * d + 2 * ff * d * d) + d * d + vocab * d
    return 3.0 * 2.0 * tokens * per_token
