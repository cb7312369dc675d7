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
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from recsys.data.vocab import Vocabulary
from recsys.model.bert4rec import BERT4Rec
from recsys.training.bundle import BundleError, load_bundle

log = logging.getLogger("recsys.train")

__all__ = ["warm_start"]

_ITEM_ROWS = ("item_embedding.weight", "output_embedding", "item_bias")
"""State-dict entries with one row per vocabulary entry (PAD, items, MASK)."""


def warm_start(model: BERT4Rec, items: Vocabulary, path: str | Path) -> dict[str, Any]:
    """Load the bundle at ``path`` into ``model`` (built for the catalogue ``items``), in place.

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
    }
    model.load_state_dict(state)
    summary = {
        "bundle": str(bundle.path),
        "items_carried": int(kept.sum()),
        "items_new": len(items) - int(kept.sum()),
        "items_dropped": int((~kept).sum()),
    }
    log.info(
        "warm start from %s: %d items carried over, %d new, %d no longer in the catalogue",
        bundle.path,
        summary["items_carried"],
        summary["items_new"],
        summary["items_dropped"],
    )
    return summary


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
