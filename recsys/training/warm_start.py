"""Warm start: initialise a model from an earlier bundle, carrying item rows across changed catalogues.

The nightly-retrain case (and the second stage of pre-train then fine-tune): yesterday's bundle was
trained on yesterday's items; today's data has new items, a few items gone, and new users. Every weight
that does not depend on the catalogue (encoder blocks, head, norms) is copied as it is. Item rows
(item embedding, untied output embedding, item bias) are matched by the item's *original id* through
both vocabularies: an item known to the bundle starts from its trained row, a new item keeps the fresh
initialisation of the new model, and [MASK] keeps its trained row. Users have no parameters (BERT4Rec is
a function of the history), so new users need nothing.

Position embeddings count back from the most recent item, so a different ``max_len`` copies the most
recent ``min(old, new)`` positions.

Item side features work the same way: the new model's feature index comes from today's feature file,
and each feature's embedding row is matched by its original id through both feature vocabularies (a
feature the bundle knew starts from its trained row, a new one from its fresh initialisation).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from recsys.data.vocab import Vocabulary
from recsys.model.bert4rec import BERT4Rec
from recsys.training.bundle import Bundle, BundleError, load_bundle

log = logging.getLogger("recsys.train")

__all__ = ["warm_start"]

_ITEM_ROWS = ("item_embedding.weight", "output_embedding", "item_bias")
"""State-dict entries with one row per vocabulary entry (PAD, items, MASK)."""
_FEATURE_TABLE = "feature_embedding.weight"
_FEATURE_ENTRIES = (_FEATURE_TABLE, "feature_offsets", "feature_index")
"""Side features: rows matched by feature id; today's index as the new model has it."""


def warm_start(
    model: BERT4Rec, items: Vocabulary, path: str | Path, features: Vocabulary | None = None
) -> dict[str, Any]:
    """Load the bundle at ``path`` into ``model`` (built for the catalogue ``items``, and the feature
    vocabulary ``features`` when it has side features), in place.

    Returns what was carried over (logged, and reported under ``derived`` by ``fit``).

    Raises:
        BundleError: the bundle cannot be read, or its architecture does not fit ``model`` (the error
            names the first weight that differs and both shapes).
    """
    bundle = load_bundle(path)
    source = bundle.model.state_dict()
    target = model.state_dict()
    missing = sorted(set(target) - set(source))
    extra = sorted(set(source) - set(target))
    if missing or extra:
        raise BundleError(
            f"{bundle.path}: its model does not have this config's architecture (weights only in the new "
            f"model: {missing[:4]}; only in the bundle: {extra[:4]}); warm starting needs the same "
            "model section apart from max_len"
        )
    # New index of each of the bundle's items (-1: the item is not in the new catalogue).
    new_index = items.lookup(bundle.items.ids)
    kept = new_index >= 0
    rows = (  # the kept items' rows in the bundle's tables, and in the new model's
        torch.from_numpy(bundle.items.offset + kept.nonzero()[0]),
        torch.from_numpy(new_index[kept]),
    )
    state = {
        name: _carried(name, value, source[name], rows, (bundle.model.mask_id, model.mask_id), bundle.path)
        for name, value in target.items()
        if name not in _FEATURE_ENTRIES
    }
    features_carried = _carry_features(state, target, source, features, bundle)
    model.load_state_dict(state)
    summary = {
        "bundle": str(bundle.path),
        "items_carried": int(kept.sum()),
        "items_new": len(items) - int(kept.sum()),
        "items_dropped": int((~kept).sum()),
        **({"features_carried": features_carried} if _FEATURE_TABLE in target else {}),
    }
    log.info(
        "warm start from %s: %d items carried over, %d new, %d no longer in the catalogue",
        bundle.path,
        summary["items_carried"],
        summary["items_new"],
        summary["items_dropped"],
    )
    return summary


def _carry_features(
    state: dict[str, torch.Tensor],
    new: dict[str, torch.Tensor],
    old: dict[str, torch.Tensor],
    features: Vocabulary | None,
    bundle: Bundle,
) -> int:
    """Put the side-feature entries of the new model into ``state``: today's index, and each feature's
    trained row where the bundle knew the feature (matched by original id). Returns the rows carried."""
    if _FEATURE_TABLE not in new:
        return 0
    if features is None or bundle.features is None:
        raise BundleError(f"{bundle.path}: no feature vocabulary to match side-feature rows by")
    new_rows = features.lookup(bundle.features.ids)
    known = new_rows >= 0
    table = new[_FEATURE_TABLE].clone()
    table[torch.from_numpy(new_rows[known])] = old[_FEATURE_TABLE][torch.from_numpy(known.nonzero()[0])]
    state[_FEATURE_TABLE] = table
    state.update({name: new[name] for name in _FEATURE_ENTRIES if name != _FEATURE_TABLE})
    return int(known.sum())


def _carried(
    name: str,
    new: torch.Tensor,
    old: torch.Tensor,
    rows: tuple[torch.Tensor, torch.Tensor],
    mask_ids: tuple[int, int],
    path: Path,
) -> torch.Tensor:
    """The value of weight ``name`` for the new model (``new`` is its fresh initialisation)."""
    by_row = name in _ITEM_ROWS or name == "position_embedding.weight"  # row counts may differ
    if (old.shape[1:] if by_row else old.shape) != (new.shape[1:] if by_row else new.shape):
        raise BundleError(
            f"{path}: weight {name} is {tuple(old.shape)} in the bundle and {tuple(new.shape)} in "
            "this config's model; warm starting needs the same model section"
        )
    if name == "position_embedding.weight":
        n = min(new.shape[0], old.shape[0])
        value = new.clone()
        value[-n:] = old[-n:]  # positions count back from the end
        return value
    if name not in _ITEM_ROWS:
        return old
    old_rows, new_rows = rows
    value = new.clone()
    value[new_rows] = old[old_rows].to(value.dtype)
    value[mask_ids[1]] = old[mask_ids[0]]  # [MASK]
    value[0] = old[0]  # PAD
    return value
