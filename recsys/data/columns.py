"""Column names of the canonical interaction schema and of the prepared dataset.

Every reader produces these columns whatever the raw names were; the rest of the pipeline refers to them
through these constants only.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "EVENT",
    "ITEM",
    "RATING",
    "ROW",
    "SPLIT",
    "SPLIT_CODES",
    "TEST",
    "TIMESTAMP",
    "TRAIN",
    "USER",
    "VALIDATION",
    "SplitName",
]

USER: Final = "user"
"""User id: original id after reading, contiguous index 0..n_users-1 after encoding."""
ITEM: Final = "item"
"""Item id: original id after reading, contiguous index 1..n_items after encoding (0 is PAD)."""
TIMESTAMP: Final = "timestamp"
"""Event time as a number (Int64 or Float64); the row number when order is implied by line order."""
RATING: Final = "rating"
"""Optional explicit rating (Float64)."""
EVENT: Final = "event"
"""Optional event type (String)."""
ROW: Final = "row"
"""0-based index of the data row in the raw file: the deterministic tie-break and the error locator."""
SPLIT: Final = "split"
"""Which split an encoded interaction belongs to: TRAIN, VALIDATION or TEST (Int8)."""

TRAIN: Final = 0
VALIDATION: Final = 1
TEST: Final = 2

SplitName = Literal["train", "validation", "test"]
SPLIT_CODES: Final[dict[str, int]] = {"train": TRAIN, "validation": VALIDATION, "test": TEST}
