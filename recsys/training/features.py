"""Item side features, from the data section to the model: read over the dataset's items, as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys.config import DataConfig
from recsys.data.item_features import read_item_features
from recsys.data.vocab import Vocabulary
from recsys.model.bert4rec import FeatureIndex

__all__ = ["ModelFeatures", "load_features"]


@dataclass(frozen=True)
class ModelFeatures:
    """The model's feature index and the feature vocabulary that the bundle keeps beside it (what a warm
    start matches feature rows by)."""

    index: FeatureIndex
    vocabulary: Vocabulary
    summary: dict[str, int | float]


def load_features(cfg: DataConfig, items: Vocabulary) -> ModelFeatures | None:
    """``data.item_features`` over ``items``, or None when none is configured."""
    found = read_item_features(cfg.item_features, items)
    if found is None:
        return None
    index = FeatureIndex(torch.from_numpy(found.offsets), torch.from_numpy(found.index), found.n_features)
    return ModelFeatures(index=index, vocabulary=found.features, summary=found.summary())
