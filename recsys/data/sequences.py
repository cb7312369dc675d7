"""Per-user item sequences in CSR form: the one sequence type, from data to training, evaluation and
inference, with the operations every consumer shares (gather rows, pad them, concatenate).

Two vectorised primitives work on any ``[start, end)`` ranges of a flat item array, so that training
windows (ranges inside a user's history) and whole histories pad and gather the same way:

- :func:`gather_ranges`: the positions of several ranges at once, and the row each belongs to;
- :func:`pad_ranges`: ``[B, width]`` rows of those ranges, PAD-filled on the left (the most recent items
  kept, the model's input) or on the right (target lists).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["PAD", "Sequences", "gather_ranges", "pad_ranges"]

PAD = 0
"""Item index 0: padding (an empty slot), never an item."""

Side = Literal["left", "right"]


def gather_ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, rows)``: the concatenated ``arange(starts[i], ends[i])`` and the row ``i`` of each.

    Both int64[sum(ends - starts)]; no Python loop.
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    rows = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
    # Position j of row i is starts[i] + j: shift every row's run of the global counter back to its start.
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(int(lengths.sum()), dtype=np.int64), rows


def pad_ranges(
    items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int, *, side: Side = "left"
) -> np.ndarray:
    """int64[B, width]: ``items[starts[i]:ends[i]]`` per row, PAD-filled.

    ``side="left"`` right-aligns each row and keeps its LAST ``width`` items (a model input: the most
    recent item in the last column); ``"right"`` left-aligns it and keeps the first ``width``.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    cols = np.arange(width, dtype=np.int64)
    src = ends[:, None] - width + cols if side == "left" else starts[:, None] + cols  # [B, W] positions
    valid = (src >= starts[:, None]) & (src < ends[:, None])
    if not items.size:
        return np.zeros((len(starts), width), dtype=np.int64)
    gathered = items[np.clip(src, 0, items.size - 1)]
    return np.where(valid, gathered, PAD).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Sequences:
    """CSR view of per-user sequences, each in chronological order (oldest first).

    Sequence ``i`` belongs to user ``users[i]`` and is ``items[offsets[i]:offsets[i + 1]]``.

    Attributes:
        users: int64[n], ascending user indices (row numbers 0..n-1 for request histories).
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

    # -- construction --------------------------------------------------------------------------------
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
    def from_lists(cls, rows: Iterable[Iterable[int]]) -> Sequences:
        """One sequence per list of item indices; users are the row numbers 0..n-1."""
        arrays = [np.asarray(list(r), dtype=np.int32).reshape(-1) for r in rows]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        items = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
        return cls(np.arange(len(arrays), dtype=np.int64), offsets, items.astype(np.int32))

    @classmethod
    def empty(cls) -> Sequences:
        """No sequences at all."""
        return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32))

    # -- access --------------------------------------------------------------------------------------
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

    def row_users(self) -> np.ndarray:
        """int64[total]: the user of every item in :attr:`items` (CSR expanded back to rows)."""
        return np.repeat(self.users, self.lengths())

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for i in range(len(self)):
            yield int(self.users[i]), self.get(i)

    def __repr__(self) -> str:
        return f"Sequences(n={len(self)}, total={len(self.items)})"

    # -- shared operations ---------------------------------------------------------------------------
    def positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(positions into items, batch row)`` of every item of the sequences at ``rows`` (the row
        gather: e.g. ``(batch_row, items[positions])`` are the (row, item) pairs to exclude as seen)."""
        rows = np.asarray(rows, dtype=np.int64)
        return gather_ranges(self.offsets[rows], self.offsets[rows + 1])

    def pad(self, rows: np.ndarray, width: int, *, side: Side = "left") -> np.ndarray:
        """int64[len(rows), width]: the sequences at ``rows``, PAD-filled (see :func:`pad_ranges`)."""
        rows = np.asarray(rows, dtype=np.int64)
        return pad_ranges(self.items, self.offsets[rows], self.offsets[rows + 1], width, side=side)

    def take(self, rows: np.ndarray, *, renumber: bool = False) -> Sequences:
        """The sequences at positions ``rows`` (a copy).

        Without ``renumber`` the users are kept, so ``rows`` must be ascending (e.g. a sample of users);
        with it, ``rows`` may come in any order and the users become the row numbers 0..len(rows)-1.
        """
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths()[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        positions, _ = self.positions(rows)
        users = np.arange(len(rows), dtype=np.int64) if renumber else self.users[rows]
        return Sequences(users=users, offsets=offsets, items=self.items[positions])

    def align(self, users: np.ndarray) -> Sequences:
        """The sequences of ``users`` (ascending), in that order; a user absent here gets an empty one."""
        users = np.asarray(users, dtype=np.int64)
        n = len(self.users)
        pos = np.minimum(np.searchsorted(self.users, users), max(n - 1, 0))
        found = self.users[pos] == users if n else np.zeros(len(users), dtype=bool)
        starts = np.where(found, self.offsets[pos], 0)
        ends = np.where(found, self.offsets[np.minimum(pos + 1, n)], 0)
        offsets = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=offsets[1:])
        positions, _ = gather_ranges(starts, ends)
        return Sequences(users=users, offsets=offsets, items=self.items[positions].astype(np.int32))

    def concat(self, other: Sequences) -> Sequences:
        """Rows of ``self`` then rows of ``other``, renumbered 0..n-1."""
        offsets = np.concatenate([self.offsets, self.offsets[-1] + other.offsets[1:]])
        items = np.concatenate([self.items, other.items]).astype(np.int32)
        return Sequences(np.arange(len(self) + len(other), dtype=np.int64), offsets, items)
