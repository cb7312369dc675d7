"""Settings that scale with the data: ``auto`` values resolved against the prepared dataset.

:func:`resolve_auto` is pure (the same dataset always gives the same values) and runs at the start of
``fit`` and ``export_checkpoint``; the resolved config is what the model is built from and what the bundle
stores, and each derived value is reported (``FitResult.derived``, MLflow params ``derived.*``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from recsys.config import RecsysConfig
from recsys.data.prepared import PreparedDataset
from recsys.training.datamodule import build_windows, training_data

__all__ = [
    "BATCH_RULE",
    "DROPOUT_RULE",
    "ITEM_DECAY_WITH_FEATURES",
    "MASK_RULE",
    "MAX_LEN_BOUNDS",
    "auto_batch_size",
    "auto_dropout",
    "auto_item_weight_decay",
    "auto_mask_prob",
    "auto_max_len",
    "resolve_auto",
]

MAX_LEN_BOUNDS = (16, 200)
"""``max_len: auto`` stays in here. 200 is the longest length the published ML-1M results use (longer
costs attention time for the few heaviest users); 16 keeps room for a window on the shortest logs."""
_MULTIPLE = 8

DROPOUT_RULE = (50.0, 0.1, 0.3)
"""``model.dropout: auto``: ``(events per item, dense, sparse)``. Logs with at least 50 training events
per item get 0.1, sparser ones 0.3. Chosen by validation NDCG@10 with 60-minute budgets (README,
"Choosing the defaults"): on amazon-toys (10.8 training events per item) 0.3 against 0.1 gave 0.0551
against 0.0492; on ML-1M (289) 0.1 is the measured recipe and 0.2 underfits in the hour."""


MASK_RULE = (50.0, 0.3, 0.5)
"""``masking.mask_prob: auto``: ``(events per item, dense, sparse)``, the same split as
:data:`DROPOUT_RULE`. Chosen by validation NDCG@10 with 60-minute budgets on top of dropout 0.3 (README,
"Choosing the defaults"): 0.5 against 0.3 gave 0.0566 against 0.0551 on amazon-toys (10.8 training
events per item) and 0.0653 against 0.0623 on amazon-games (9.5); the short Amazon histories (a 24-item
window) give few targets per pass at 0.3. ML-1M (289) keeps the measured recipe's 0.3."""


ITEM_DECAY_WITH_FEATURES = 1.0
"""``train.optimizer.item_weight_decay: auto`` with item side features. With features an item's row is its
own embedding plus its features' mean; decaying the own part (the features' rows are not decayed) makes rare
items lean on what they share. amazon-toys, 60-minute budget, validation NDCG@10 (README, "Choosing item
side features"): none 0.0623, 0.1 0.0651, 0.3 0.0716, 1.0 0.0728, 3.0 0.0649. Without features the decay
is level with none (0.3: 0.0656 against 0.0658), so it stays off there."""
BATCH_RULE = (128, 32, 100)
"""``train.batch_size: auto``: ``(largest, smallest, steps)``. The largest batch, halved down to the
smallest while an epoch of the training windows would have fewer than ``steps`` optimizer steps. Chosen
by validation NDCG@10 with 60-minute budgets (README, "Choosing the defaults"): on ML-1M (8.7k training
windows, 68 steps at 128) batch 64 against 128 gave 0.1694 against 0.1667 (test 0.1735 against 0.1681);
the Amazon sets (19k and 31k sequences) keep 128."""


def auto_item_weight_decay(has_features: bool) -> float | None:
    """Item-table weight decay: :data:`ITEM_DECAY_WITH_FEATURES` with side features, else None."""
    return ITEM_DECAY_WITH_FEATURES if has_features else None


def auto_batch_size(n_windows: int) -> int:
    """Batch size for an epoch of ``n_windows`` training windows (:data:`BATCH_RULE`)."""
    batch, smallest, steps = BATCH_RULE
    while batch > smallest and n_windows < steps * batch:
        batch //= 2
    return batch


def _by_density(rule: tuple[float, float, float], n_events: int, n_items: int) -> float:
    threshold, dense, sparse = rule
    return dense if n_events >= threshold * max(n_items, 1) else sparse


def auto_dropout(n_events: int, n_items: int) -> float:
    """Dropout for a log of ``n_events`` training events over ``n_items`` items (:data:`DROPOUT_RULE`)."""
    return _by_density(DROPOUT_RULE, n_events, n_items)


def auto_mask_prob(n_events: int, n_items: int) -> float:
    """Masking rate for ``n_events`` training events over ``n_items`` items (:data:`MASK_RULE`)."""
    return _by_density(MASK_RULE, n_events, n_items)


def auto_max_len(lengths: np.ndarray, quantile: float) -> int:
    """The length holding ``quantile`` of the histories whole, plus the appended [MASK], rounded up to a
    multiple of 8 and clipped to :data:`MAX_LEN_BOUNDS`.

    On the shared datasets, as ``bench/bench_quality.py`` reads them (95% quantile of the training
    histories in brackets): 200 for ML-1M (554, clipped) and the bundled ml-latest-small (522, clipped),
    24 for amazon-toys (18) and amazon-games (20).
    """
    low, high = MAX_LEN_BOUNDS
    if len(lengths) == 0:
        return low
    needed = math.ceil(float(np.quantile(lengths, quantile))) + 1
    rounded = _MULTIPLE * math.ceil(needed / _MULTIPLE)
    return int(min(high, max(low, rounded)))


def resolve_auto(cfg: RecsysConfig, dataset: PreparedDataset) -> tuple[RecsysConfig, dict[str, Any]]:
    """``cfg`` with every ``auto`` replaced by its value for ``dataset``, and those values by dotted key."""
    derived: dict[str, Any] = {}
    model = cfg.model
    if model.max_len == "auto":
        max_len = auto_max_len(dataset.history("train").lengths(), model.max_len_quantile)
        model = model.model_copy(update={"max_len": max_len})
        derived["model.max_len"] = max_len
    if model.dropout == "auto" or model.attention_dropout == "auto":
        rate = auto_dropout(int(dataset.item_counts().sum()), dataset.n_items)
        update = {k: rate for k in ("dropout", "attention_dropout") if getattr(model, k) == "auto"}
        model = model.model_copy(update=update)
        derived.update({f"model.{k}": v for k, v in update.items()})
    masking = cfg.masking
    if masking.mask_prob == "auto":
        mask_prob = auto_mask_prob(int(dataset.item_counts().sum()), dataset.n_items)
        masking = masking.model_copy(update={"mask_prob": mask_prob})
        derived["masking.mask_prob"] = mask_prob
    train = cfg.train
    if train.batch_size == "auto":
        starts, _ = build_windows(training_data(dataset, train).history, model.resolved_max_len(), masking)
        batch_size = auto_batch_size(len(starts))
        train = train.model_copy(update={"batch_size": batch_size})
        derived["train.batch_size"] = batch_size
    if train.optimizer.item_weight_decay == "auto":
        item_decay = auto_item_weight_decay(cfg.data.item_features.path is not None)
        optimizer = train.optimizer.model_copy(update={"item_weight_decay": item_decay})
        train = train.model_copy(update={"optimizer": optimizer})
        derived["train.optimizer.item_weight_decay"] = item_decay
    if not derived:
        return cfg, derived
    return cfg.model_copy(update={"model": model, "masking": masking, "train": train}), derived
