"""Baselines every model table is printed next to: most popular and last-item transitions.

Both are :class:`~recsys.evaluation.protocol.Scorer` s, evaluated by the same protocol as the model
(:func:`recsys.evaluation.protocol.evaluate`), and fitted on the training sequences only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from recsys.data.sequences import PAD, Sequences, gather_ranges
from recsys.evaluation.protocol import Scorer
from recsys.inference.topk import mask_special_

__all__ = ["LastItemTransitions", "MostPopular", "fit_baselines", "item_counts_from_csr"]


def item_counts_from_csr(items: np.ndarray, n_items: int) -> np.ndarray:
    """int64[n_items + 2] interaction counts per item column (PAD and MASK = 0)."""
    counts = np.bincount(np.asarray(items, dtype=np.int64), minlength=n_items + 2)[: n_items + 2]
    counts = counts.astype(np.int64)
    counts[PAD] = 0
    counts[-1] = 0
    return counts


# --------------------------------------------------------------------------------------- baselines
class MostPopular:
    """Scores every user by training popularity (interaction count); PAD and MASK score -inf.

    Equal counts are ordered by item index by :func:`recsys.evaluation.metrics.topk`.
    """

    def __init__(self, item_counts: np.ndarray, n_items: int):
        counts = np.asarray(item_counts, dtype=np.float64).reshape(-1)
        if counts.size == n_items + 1:
            counts = np.append(counts, 0.0)
        if counts.size != n_items + 2:
            raise ValueError(f"item_counts has {counts.size} entries, expected n_items + 2 = {n_items + 2}")
        self.n_items = n_items
        # float32 represents every count exactly up to 2**24 interactions per item.
        self._row = mask_special_(torch.as_tensor(counts, dtype=torch.float32).unsqueeze(0))[0]

    @classmethod
    def fit(cls, train: Sequences, n_items: int) -> MostPopular:
        """Count the items of the training sequences."""
        return cls(item_counts_from_csr(train.items, n_items), n_items)

    def scores(self, history: Tensor) -> Tensor:
        """Float[B, V]: the same popularity row for every user."""
        return self._row.to(history.device).expand(history.shape[0], -1).clone()


class LastItemTransitions:
    """First-order Markov baseline: score = count(last item → item) + w · count(item) / max count.

    Transition counts come from consecutive pairs inside each training sequence (never across users). They
    are stored sparsely, as CSR arrays of size O(distinct pairs) <= O(interactions), never as a dense
    V × V matrix, so the baseline fits any catalogue. With ``0 <= w < 1`` the popularity term is below one
    transition, so it only breaks ties between equal transition counts, and it is the whole score when the
    last item has no recorded successor (or the history is empty). Scores are float64 because, in float32,
    a term of w/max_count next to large transition counts would be rounded away.
    """

    def __init__(
        self,
        train: Sequences,
        n_items: int,
        *,
        backoff_weight: float = 0.5,
        item_counts: np.ndarray | None = None,
    ):
        if not 0.0 <= backoff_weight < 1.0:
            raise ValueError(f"backoff_weight must be in [0, 1), got {backoff_weight}")
        n_cols = n_items + 2
        offsets = train.offsets
        seq = train.items.astype(np.int64)
        # A pair (j, j+1) is a transition unless position j is the last item of its user.
        is_pair = np.ones(max(seq.size - 1, 0), dtype=bool)
        user_last = offsets[1:][np.diff(offsets) > 0] - 1
        is_pair[user_last[user_last < is_pair.size]] = False
        keys = seq[:-1][is_pair] * n_cols + seq[1:][is_pair]
        pairs, counts = np.unique(keys, return_counts=True)
        rows, cols = pairs // n_cols, pairs % n_cols
        indptr = np.zeros(n_cols + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_cols), out=indptr[1:])
        self.n_items = n_items
        self.indptr = torch.as_tensor(indptr)  # Long[V + 1]; row = previous item
        self.indices = torch.as_tensor(cols, dtype=torch.int64)  # Long[nnz]; next item
        self.counts = torch.as_tensor(counts, dtype=torch.float64)  # Float64[nnz]

        popularity = item_counts_from_csr(seq, n_items) if item_counts is None else np.asarray(item_counts)
        pop = torch.as_tensor(popularity, dtype=torch.float64).reshape(-1)[:n_cols].clone()
        pop = pop / pop[1:-1].max().clamp(min=1.0)
        self._backoff = mask_special_((backoff_weight * pop).unsqueeze(0))[0]  # Float64[V]

    @property
    def nnz(self) -> int:
        """Number of distinct (previous, next) pairs stored."""
        return int(self.indices.numel())

    def successors(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        """Items seen right after ``item`` in training and how often (ascending item index)."""
        lo, hi = int(self.indptr[item]), int(self.indptr[item + 1])
        return self.indices[lo:hi].numpy(), self.counts[lo:hi].numpy()

    def scores(self, history: Tensor) -> Tensor:
        """Float64[B, V] scores from each history's last column (PAD → popularity only)."""
        device = history.device
        last = history[:, -1].long().cpu().numpy()
        out = self._backoff.to(device).expand(history.shape[0], -1).clone()  # [B, V]
        indptr = self.indptr.numpy()
        flat, rows = gather_ranges(indptr[last], indptr[last + 1])
        flat_t = torch.as_tensor(flat)
        out.index_put_(
            (torch.as_tensor(rows, device=device), self.indices[flat_t].to(device)),
            self.counts[flat_t].to(device),
            accumulate=True,
        )
        return out


def fit_baselines(train: Sequences, n_items: int) -> dict[str, Scorer]:
    """Most popular and last-item transitions, both fitted on the training sequences ``train``: the
    reference rows every model table is printed next to."""
    counts = item_counts_from_csr(train.items, n_items)
    return {
        "most_popular": MostPopular(counts, n_items),
        "last_item_transitions": LastItemTransitions(train, n_items, item_counts=counts),
    }
