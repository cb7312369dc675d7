"""Where interactions came from: the resolved description of a source, and how rows map to lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.data.sniff import ResolvedFormat

__all__ = ["SourceInfo"]


@dataclass(frozen=True)
class SourceInfo:
    """What was read and how: resolved options, the column mapping and how rows map to lines.

    Attributes:
        path: the input file.
        format: the resolved format (never ``auto``).
        compressed: gzip-compressed.
        encoding: the text encoding used (``None`` for parquet).
        separator: the field separator of a text file (``"::"`` for MovieLens .dat).
        has_header: whether a text file has a header line.
        implied_order: the timestamp column is the row number (no time column in the source).
        raw_columns: canonical column -> raw column name in the file.
        available: every raw column name in the file (for error messages).
    """

    path: Path
    format: ResolvedFormat
    compressed: bool
    encoding: str | None
    separator: str | None
    has_header: bool
    implied_order: bool
    raw_columns: dict[str, str]
    available: list[str] = field(default_factory=list)

    @property
    def is_text(self) -> bool:
        """Whether rows map to physical lines."""
        return self.format != "parquet"

    def locate(self, row: int) -> dict[str, int]:
        """``line=`` (text: 1-based physical line) or ``row=`` (parquet) keyword for a ``DataError``."""
        if self.is_text:
            return {"line": row + 1 + int(self.has_header)}
        return {"row": row}

    def raw(self, canonical: str) -> str:
        """Raw column name of a canonical column (for error messages)."""
        return self.raw_columns.get(canonical, canonical)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready description (stored in the manifest)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "compressed": self.compressed,
            "encoding": self.encoding,
            "separator": self.separator,
            "has_header": self.has_header,
            "implied_order": self.implied_order,
            "columns": dict(self.raw_columns),
        }
