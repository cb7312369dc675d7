"""What every reader shares: the lazy :class:`Scan`, the column mapping and the canonical projection.

A reader resolves a source into a :class:`Scan` (a lazy canonical frame plus the :class:`SourceInfo`
describing how it was read, and for text files the :class:`TextPlan` to read it again when a value needs a
wider type or an error needs locating). The canonical schema is described in :mod:`recsys.data.readers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.config import SourceConfig
from recsys.data.columns import EVENT, ITEM, RATING, ROW, TIMESTAMP, USER
from recsys.data.errors import DelimiterError, MissingColumnError
from recsys.data.sniff import ResolvedFormat, Sample, sniff_delimiter
from recsys.data.source import SourceInfo

__all__ = ["Scan", "TextPlan", "canonical", "check_columns", "first_line", "mapping", "source_info"]

# Formats whose layout is fixed: they ignore ``source.columns``.
_FIXED: dict[str, dict[str, str | None]] = {
    "movielens_dat": {USER: "UserID", ITEM: "MovieID", RATING: "Rating", TIMESTAMP: "Timestamp"},
    "movielens_csv": {USER: "userId", ITEM: "movieId", RATING: "rating", TIMESTAMP: "timestamp"},
    "sasrec_txt": {USER: "user", ITEM: "item", RATING: None, TIMESTAMP: None},
    "sequence_per_line": {USER: "user", ITEM: "item", RATING: None, TIMESTAMP: None},
}


def _strip_recbole_types(names: list[str]) -> list[str]:
    """``user_id:token`` -> ``user_id`` (RecBole's typed header)."""
    return [name.split(":", 1)[0] for name in names]


@dataclass(frozen=True)
class TextPlan:
    """How polars is asked to read a text source.

    Attributes:
        source: the path, or UTF-8 bytes when the file had to be transcoded.
        separator: the one-byte separator given to polars.
        has_header: whether the first line is a header.
        names: names given to the fields of a headerless file.
        field_names: the names users know the fields by (for error messages).
        recbole: strip RecBole ``:type`` suffixes from header names.
        overrides: dtypes forced on some raw columns.
    """

    source: Path | bytes
    separator: str
    has_header: bool
    names: list[str] | None
    field_names: list[str]
    recbole: bool
    overrides: dict[str, pl.DataType] = field(default_factory=dict)

    def scan(self, overrides: dict[str, pl.DataType] | None = None, *, strings: bool = False) -> pl.LazyFrame:
        """A polars scan with these options (every column as a string with ``strings=True``)."""
        forced = self.overrides if overrides is None else overrides
        return pl.scan_csv(
            self.source,
            separator=self.separator,
            has_header=self.has_header,
            new_columns=None if self.has_header else self.names,
            with_column_names=_strip_recbole_types if self.recbole else None,
            schema_overrides=None if strings or not forced else forced,
            infer_schema=not strings,
            encoding="utf8",
            raise_if_empty=False,
        )


@dataclass(frozen=True)
class Scan:
    """A lazy canonical frame over a source, plus what is needed to read it again and locate errors."""

    lazy: pl.LazyFrame
    info: SourceInfo
    text: TextPlan | None = None


def mapping(source: SourceConfig, fmt: ResolvedFormat) -> dict[str, str | None]:
    """Canonical column -> raw name (``None``: absent) for a format."""
    if fmt in _FIXED:
        return {**_FIXED[fmt], EVENT: None}
    cols = source.columns
    return {
        USER: cols.user,
        ITEM: cols.item,
        RATING: cols.rating,
        TIMESTAMP: cols.timestamp,
        EVENT: cols.event,
    }


def check_columns(
    path: Path,
    wanted_by: dict[str, str | None],
    available: list[str],
    separator: str | None,
    has_header: bool,
    line: str = "",
) -> None:
    """Every mapped column must exist; otherwise say which are missing and what there is."""
    wanted = [raw for raw in wanted_by.values() if raw is not None]
    missing = [raw for raw in wanted if raw not in available]
    if not missing:
        return
    if len(available) == 1 and len(wanted) > 1 and separator is not None:
        line = line or available[0]
        guess = sniff_delimiter([line])
        hint = f" (it looks {guess!r}-separated)" if guess != separator else ""
        raise DelimiterError(
            f"a single field {line[:80]!r} when split on {separator!r}{hint}",
            path=path,
            line=1,
            expected=f"{len(wanted)}+ fields ({', '.join(wanted)}); check source.delimiter",
        )
    hint = "" if has_header else " (the file has no header: name its fields with source.column_names)"
    raise MissingColumnError(
        f"column(s) {', '.join(map(repr, missing))} not found; available: {', '.join(map(repr, available))}"
        + hint,
        path=path,
        column=missing[0],
        expected="source.columns to name existing columns",
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (polars errors run over many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def source_info(
    source: SourceConfig,
    fmt: ResolvedFormat,
    sample: Sample,
    layout: tuple[str | None, bool],
    columns: dict[str, str | None],
    available: list[str],
    encoding: str | None = None,
) -> SourceInfo:
    """The :class:`SourceInfo` of a resolved source (``layout``: separator, has_header)."""
    separator, has_header = layout
    return SourceInfo(
        path=source.path,
        format=fmt,
        compressed=sample.compressed,
        encoding=encoding,
        separator=separator,
        has_header=has_header,
        implied_order=columns[TIMESTAMP] is None,
        raw_columns={k: v for k, v in columns.items() if v is not None},
        available=available,
    )


def canonical(lazy: pl.LazyFrame, info: SourceInfo) -> pl.LazyFrame:
    """Add the row index, then project and rename to the canonical schema."""
    columns = [pl.col(raw).alias(name) for name, raw in info.raw_columns.items()]
    if info.implied_order:
        columns.append(pl.col(ROW).cast(pl.Int64).alias(TIMESTAMP))
    return lazy.with_row_index(ROW).select(*columns, pl.col(ROW))
