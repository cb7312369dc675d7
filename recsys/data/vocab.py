"""Id encoding: original user/item ids <-> contiguous indices.

Users are encoded 0..n_users-1; items 1..n_items, because index 0 is PAD and n_items+1 is MASK (see
docs/CONTRACTS.md). Both vocabularies are ordered by **sorted original id** (numeric order for integer ids,
byte-wise lexicographic order for string ids), so the encoding depends only on which ids survive cleaning,
never on row order. They are persisted as parquet (``index``, ``id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from recsys.data.errors import PreparedDatasetError, UnknownIdError

__all__ = ["ITEM_OFFSET", "USER_OFFSET", "Vocabulary", "dense_codes"]

USER_OFFSET = 0
ITEM_OFFSET = 1
"""Items start at 1: 0 is PAD."""

_INDEX = "index"
_ID = "id"
_CODE = "code"
# A lookup table indexed by id is the fastest encoder for integer ids, as long as it stays small.
_MAX_TABLE = 1 << 26


def dense_codes(values: pl.Series) -> tuple[np.ndarray, pl.Series]:
    """Encode non-null ids as codes 0..k-1 in sorted-id order.

    Returns:
        (codes int32[len(values)], sorted unique ids as a Series of the input dtype).

    Integer ids within a modest range use a lookup table (one pass, no sort or hash of the rows);
    anything else (strings, sparse or negative-heavy integers) joins against the sorted uniques.
    """
    if values.dtype.is_integer() and len(values) > 0:
        low = int(values.min())  # type: ignore[arg-type]
        high = int(values.max())  # type: ignore[arg-type]
        span = high - low + 1
        if span <= max(4 * len(values), 1 << 16) and span <= _MAX_TABLE:
            raw: np.ndarray = values.to_numpy()
            offsets = raw - low if low else raw
            present = np.zeros(span, dtype=np.bool_)
            present[offsets] = True
            table = np.cumsum(present, dtype=np.int32) - 1
            found = np.flatnonzero(present).astype(np.int64) + low
            return table[offsets], pl.Series(values.name, found, dtype=values.dtype)
    uniques: pl.Series = values.unique().sort()
    lookup = pl.DataFrame({_ID: uniques, _CODE: np.arange(len(uniques), dtype=np.int32)})
    codes = (
        values.rename(_ID)
        .to_frame()
        .lazy()
        .join(lookup.lazy(), on=_ID, how="left", maintain_order="left")
        .select(_CODE)
        .collect()
        .to_series()
    )
    return codes.to_numpy(), uniques


def _as_series(values: Any) -> pl.Series:
    if isinstance(values, pl.Series):
        return values
    return pl.Series(_ID, values if isinstance(values, np.ndarray) else list(values))


class Vocabulary:
    """A bijection between original ids and contiguous indices ``offset .. offset + len - 1``.

    Args:
        ids: the original ids, unique and sorted ascending; ``ids[k]`` gets index ``offset + k``.
        offset: 0 for users, 1 for items (0 is PAD).
    """

    def __init__(self, ids: pl.Series, *, offset: int = 0) -> None:
        if ids.null_count():
            raise ValueError("vocabulary ids must not be null")
        if len(ids) > 1 and not bool((ids.slice(1) > ids.slice(0, len(ids) - 1)).all()):
            raise ValueError("vocabulary ids must be unique and sorted ascending")
        self._ids = ids.rename(_ID)
        self._offset = offset
        self._numpy: np.ndarray | None = None

    @property
    def ids(self) -> pl.Series:
        """The original ids, in index order."""
        return self._ids

    @property
    def offset(self) -> int:
        """The index of the first id (0 for users, 1 for items)."""
        return self._offset

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"Vocabulary(n={len(self)}, offset={self._offset}, dtype={self._ids.dtype})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._offset == other._offset and self._ids.equals(other._ids)

    __hash__ = None  # type: ignore[assignment]

    def lookup(self, values: pl.Series | np.ndarray | Sequence[Any]) -> np.ndarray:
        """int64 index of each value, -1 where it is not in the vocabulary (or does not cast to its type)."""
        series = _as_series(values).cast(self._ids.dtype, strict=False)
        if not len(self._ids):
            return np.full(len(series), -1, dtype=np.int64)
        # Binary search in the sorted ids, then check the id found is really there (nulls never match).
        pos = self._ids.search_sorted(series).to_numpy().astype(np.int64)
        candidates = self._ids.gather(np.minimum(pos, len(self._ids) - 1))
        matched = (candidates == series).fill_null(False).to_numpy()
        return np.where(matched, pos + self._offset, -1)

    def encode(
        self, values: pl.Series | np.ndarray | Sequence[Any], unknown: Literal["error", "drop"] = "error"
    ) -> tuple[np.ndarray, int]:
        """Original ids -> indices.

        Args:
            values: ids to encode (cast to the vocabulary's dtype; values that do not cast are unknown).
            unknown: ``"error"`` raises :class:`UnknownIdError` if any id is missing; ``"drop"`` leaves
                the missing ones out of the result.

        Returns:
            (int64 indices of the known ids in input order, number of unknown ids).
        """
        index = self.lookup(values)
        matched = index >= 0
        n_unknown = int(len(index) - matched.sum())
        if n_unknown and unknown == "error":
            examples = _as_series(values).filter(pl.Series(~matched)).head(5).to_list()
            raise UnknownIdError(
                f"{n_unknown} id(s) not in the vocabulary, e.g. {examples}",
                expected="ids seen when the dataset was prepared (or unknown_ids: drop)",
            )
        return index[matched], n_unknown

    def decode(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Indices -> original ids (a numpy array; object dtype for string ids)."""
        idx = np.asarray(indices, dtype=np.int64) - self._offset
        if idx.size and (idx.min() < 0 or idx.max() >= len(self._ids)):
            raise UnknownIdError(
                f"index out of range [{self._offset}, {self._offset + len(self._ids) - 1}]",
                expected="indices produced by this vocabulary",
            )
        if self._numpy is None:
            self._numpy = self._ids.to_numpy()
        return self._numpy[idx]

    def frame(self) -> pl.DataFrame:
        """``index`` (int32), ``id``: the table written by :meth:`save`."""
        index = np.arange(self._offset, self._offset + len(self._ids), dtype=np.int32)
        return pl.DataFrame({_INDEX: index, _ID: self._ids})

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as parquet (``index``, ``id``)."""
        self.frame().write_parquet(Path(path))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`; the offset is the first index."""
        file = Path(path)
        try:
            frame = pl.read_parquet(file)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise PreparedDatasetError(f"cannot read vocabulary ({exc})", path=file) from None
        if frame.columns != [_INDEX, _ID]:
            raise PreparedDatasetError(
                f"vocabulary has columns {frame.columns}", path=file, expected=f"[{_INDEX!r}, {_ID!r}]"
            )
        index = frame[_INDEX].to_numpy()
        offset = int(index[0]) if len(index) else 0
        if not np.array_equal(index, np.arange(offset, offset + len(index))):
            raise PreparedDatasetError("vocabulary indices are not contiguous", path=file, column=_INDEX)
        try:
            return cls(frame[_ID], offset=offset)
        except ValueError as exc:
            raise PreparedDatasetError(str(exc), path=file, column=_ID) from None
