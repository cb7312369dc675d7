"""Per-user item sequences in CSR form (the hand-over format from data to training and evaluation)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["Sequences"]


@dataclass(frozen=True, eq=False)
class Sequences:
    """CSR view of per-user sequences, each in chronological order (oldest first).

    Sequence ``i`` belongs to user ``users[i]`` and is ``items[offsets[i]:offsets[i + 1]]``.

    Attributes:
        users: int64[n], ascending user indices.
        offsets: int64[n + 1], ``offsets[0] == 0`` and ``offsets[-1] == len(items)``.
        items: int32[total], item indices (1..n_items).
    """

    users: np.ndarray
    offsets: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.users)
        if self.offsets.shape != (n + 1,):
            raise ValueError(f"offsets must have shape ({n + 1},), got {self.offsets.shape}")
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.items):
            raise ValueError("offsets must start at 0 and end at len(items)")
        if n and (np.any(np.diff(self.offsets) < 0) or np.any(np.diff(self.users) <= 0)):
            raise ValueError("offsets must be non-decreasing and users strictly ascending")

    @classmethod
    def from_sorted(cls, users: np.ndarray, items: np.ndarray, n_users: int | None = None) -> Sequences:
        """Build from parallel arrays sorted by user (and by time within a user), vectorised.

        Args:
            users: user index per event, non-decreasing.
            items: item index per event.
            n_users: when given, every user ``0..n_users-1`` gets a sequence, empty if they have no event;
                otherwise only users with at least one event appear.
        """
        users = np.asarray(users, dtype=np.int64)
        counts = np.bincount(users, minlength=n_users or 0)
        if n_users is not None and len(counts) > n_users:
            raise ValueError(f"user index {len(counts) - 1} >= n_users ({n_users})")
        present = np.arange(len(counts), dtype=np.int64) if n_users is not None else np.flatnonzero(counts)
        offsets = np.zeros(len(present) + 1, dtype=np.int64)
        np.cumsum(counts[present], out=offsets[1:])
        return cls(users=present, offsets=offsets, items=np.asarray(items, dtype=np.int32))

    @classmethod
    def empty(cls) -> Sequences:
        """No sequences at all."""
        return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.users)

    def get(self, i: int) -> np.ndarray:
        """Items of the ``i``-th sequence (position ``i``, i.e. user ``users[i]``), a view."""
        return self.items[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        """int64[n]: the length of every sequence."""
        return np.diff(self.offsets)

    def position(self, user: int) -> int:
        """Position of ``user`` in :attr:`users`; ``KeyError`` if absent."""
        pos = int(np.searchsorted(self.users, user))
        if pos >= len(self.users) or self.users[pos] != user:
            raise KeyError(user)
        return pos

    def for_user(self, user: int) -> np.ndarray:
        """Items of user ``user`` (empty if the user has no sequence here)."""
        try:
            return self.get(self.position(user))
        except KeyError:
            return self.items[:0]

    def take(self, index: np.ndarray) -> Sequences:
        """The sequences at ascending positions ``index`` (a copy), e.g. a sample of users."""
        index = np.asarray(index, dtype=np.int64)
        lengths = self.lengths()[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # position k of row j reads offsets[index[j]] + k
        gather = np.repeat(self.offsets[:-1][index] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Sequences(users=self.users[index], offsets=offsets, items=self.items[gather])

    def row_users(self) -> np.ndarray:
        """int64[total]: the user of every item in :attr:`items` (CSR expanded back to rows)."""
        return np.repeat(self.users, self.lengths())

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(len(self)):
            yield int(self.users[i]), self.get(i)

    def __repr__(self) -> str:
        return f"Sequences(n={len(self)}, total={len(self.items)})"
