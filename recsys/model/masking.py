"""Masked-item prediction: which positions a training step predicts, and what the model sees there.

One seedable, vectorised function (:func:`mask_items`) plus :func:`windows`, which cuts histories longer
than ``max_len`` into training windows.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from recsys.config import MaskingConfig

__all__ = ["mask_items", "windows"]

_PAD = 0


def mask_items(
    items: Tensor, *, n_items: int, cfg: MaskingConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Choose prediction targets in a batch of left-padded sequences and corrupt the inputs there.

    * Each real item is a target with probability ``cfg.mask_prob``; padding never is.
    * Every non-empty sequence gets at least one target (if the coin flips picked none, one real
      position is picked uniformly at random), so no sequence is wasted.
    * A target is shown as [MASK] with probability ``cfg.replace_mask``, as a random item drawn
      uniformly from 1..n_items with probability ``cfg.replace_random``, and unchanged otherwise
      (BERT's 80/10/10).
    * With probability ``cfg.last_item_prob`` a non-empty sequence instead has ONLY its last item as
      target, always shown as [MASK]: this is exactly the inference situation (a [MASK] appended after
      the history) and closes the train/inference gap.

    Args:
        items: ``Long[B, L]`` left-padded item indices (PAD = 0, items 1..n_items).
        n_items: catalogue size; MASK is ``n_items + 1``.
        cfg: masking probabilities.
        generator: the only source of randomness, on ``items.device``; the same generator state
            gives the same result.

    Returns:
        ``(inputs, labels)``, both ``Long[B, L]``: ``inputs`` is what the model sees, ``labels`` holds
        the original item at target positions and 0 elsewhere.
    """
    B, L = items.shape
    device = items.device
    real = items != _PAD  # [B, L]

    # Draws happen in a fixed order and with fixed shapes, so a seeded generator reproduces the batch.
    coin = torch.rand((B, L), generator=generator, device=device)  # which positions are targets
    how = torch.rand((B, L), generator=generator, device=device)  # how a target is shown
    random_items = torch.randint(1, n_items + 1, (B, L), generator=generator, device=device)
    last_only = torch.rand((B,), generator=generator, device=device) < cfg.last_item_prob  # [B]

    targets = real & (coin < cfg.resolved_mask_prob())  # [B, L]
    # At least one target per non-empty sequence. In a row with no target every real coin is >= mask_prob
    # and i.i.d., so the smallest one is a uniformly random real position: no extra draw needed.
    empty_row = ~targets.any(dim=1) & real.any(dim=1)  # [B]
    first = coin.masked_fill(~real, 2.0).argmin(dim=1)  # [B]
    targets[empty_row, first[empty_row]] = True

    # Last-item-only rows. With left padding the last column is real iff the sequence is non-empty.
    last_only &= real[:, -1]
    targets[last_only] = False
    targets[last_only, -1] = True

    show_mask = targets & (how < cfg.replace_mask)
    show_random = targets & ~show_mask & (how < cfg.replace_mask + cfg.replace_random)
    show_mask[last_only, -1] = True
    show_random[last_only, -1] = False

    inputs = torch.where(show_random, random_items, items)
    inputs = inputs.masked_fill(show_mask, n_items + 1)
    labels = items.masked_fill(~targets, _PAD)
    return inputs, labels


def windows(
    length: int, max_len: int, mode: Literal["recent", "sliding"] = "recent", stride: int | None = None
) -> list[tuple[int, int]]:
    """``(start, end)`` slices of a history of ``length`` items, each at most ``max_len`` long.

    * ``recent``: one window, the most recent ``max_len`` items.
    * ``sliding``: windows ending at ``length``, ``length - stride``, ... (anchored at the end so the
      most recent items are always a full window); the oldest window is ``(0, max_len)``, so it may
      overlap the next one by less than ``stride`` but no item is dropped (unless ``stride > max_len``,
      which deliberately skips items).

    Windows are returned oldest first. A history no longer than ``max_len`` is one window.

    Args:
        length: number of items in the history.
        max_len: longest window (for training inputs this is ``ModelConfig.max_len``).
        mode: ``"recent"`` or ``"sliding"``.
        stride: step between sliding windows; None means ``max_len`` (non-overlapping).
    """
    if length < 0 or max_len < 1:
        raise ValueError(f"need length >= 0 and max_len >= 1, got {length=}, {max_len=}")
    if length <= max_len:
        return [(0, length)]
    if mode == "recent":
        return [(length - max_len, length)]
    if mode != "sliding":
        raise ValueError(f"unknown window mode {mode!r}")
    step = max_len if stride is None else stride
    if step < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    ends = list(range(length, max_len, -step))  # every end > max_len, newest first
    ends.append(max_len)
    return [(end - max_len, end) for end in reversed(ends)]
