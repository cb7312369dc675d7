"""Item-to-item similarity: nearest items by cosine of the model's output item embeddings.

The output embedding (tied or not, see ``BERT4Rec.output_weight``) is what the model dots a user state with
to score items, so two items close in it are items the model recommends in the same situations: a good
"more like this" signal. Similarities are computed in blocks of ``batch_size`` items against the whole
catalogue (one ``[batch, n_items]`` block at a time), so memory stays bounded for any catalogue size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from recsys.inference.topk import TopK, topk
from recsys.model.bert4rec import BERT4Rec

__all__ = ["item_vectors", "similar_items"]


def item_vectors(model: BERT4Rec) -> torch.Tensor:
    """``Float[n_items, d]``: unit-length output embeddings of the real items (row i is item i + 1)."""
    with torch.inference_mode():
        weight = model.output_weight()[1 : model.n_items + 1].detach().float()  # [n_items, d]
        return F.normalize(weight, dim=1)


def similar_items(
    model: BERT4Rec,
    k: int,
    *,
    queries: np.ndarray | None = None,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> Iterator[TopK]:
    """The ``k`` most similar items of every query item (itself excluded), best first, in blocks.

    Each :class:`TopK` holds a block of query items: ``users`` are their item indices (``queries``, or
    1..n_items when None), ``items`` their neighbours (item indices) and ``scores`` the cosines. Ties go to
    the lower item index. ``cos(i, j)`` and ``cos(j, i)`` are the same dot product of the same unit
    vectors, so the score of a pair does not depend on which item asked (up to float rounding).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    vectors = item_vectors(model).to(device)  # [n, d]
    n = vectors.shape[0]
    asked = np.arange(1, n + 1, dtype=np.int64) if queries is None else np.asarray(queries, dtype=np.int64)
    for lo in range(0, len(asked), batch_size):
        block = asked[lo : lo + batch_size]
        rows = torch.from_numpy(block - 1).to(device)
        with torch.inference_mode():
            sims = vectors[rows] @ vectors.T  # [b, n], column j is item j + 1
            sims[torch.arange(len(block), device=device), rows] = float("-inf")
            # topk() reads column 0 as PAD (an empty slot): prepend a -inf PAD column so that
            # column index == item index.
            padded = F.pad(sims, (1, 0), value=float("-inf"))  # [b, n + 1]
            top = topk(padded, k)  # [b, k]
            values = padded.gather(1, top).masked_fill_(top == 0, float("-inf"))
        yield TopK(
            users=block,
            items=top.to("cpu", torch.int32).numpy(),
            scores=values.to("cpu", torch.float32).numpy(),
        )
