"""Timestamps written as text: numbers (unix time) or ISO-8601 dates and date-times, to unix seconds.

A text column of timestamps is one kind or the other, decided by its first value: numbers stay numbers
(seconds, or whatever unit the log uses); ISO-8601 values become UTC unix seconds, the unit every other
datetime source (parquet datetimes) is converted to, so ordering and the integer type match the rest of the
pipeline (Int64 when every value is a whole second, Float64 otherwise; see :mod:`recsys.data.normalise`).

Accepted date-times: ``2020-01-02``, ``2020-01-02T03:04:05`` (or a space for the ``T``), ``2020-01-02T03:04``,
optional fractional seconds, and an optional ``Z`` or ``+01:00`` / ``-0230`` offset. Values without an offset
are read as UTC. The first value that is not of the column's kind is an
:class:`~recsys.data.errors.InvalidValueError` naming its line, column and value.
"""

from __future__ import annotations

import polars as pl

from recsys.data.columns import ROW, TIMESTAMP
from recsys.data.errors import InvalidValueError
from recsys.data.sniff import looks_numeric
from recsys.data.source import SourceInfo

__all__ = ["ISO_EXPECTED", "invalid_timestamp", "parse_timestamp_strings"]

ISO_EXPECTED = "an ISO-8601 date or date-time (2020-01-02, 2020-01-02T03:04:05, optionally Z or +01:00)"
_NUMBER_EXPECTED = "a number (unix time)"
# With an offset (Z is rewritten as +00:00 first): converted to UTC.
_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
# Without one: taken as UTC.
_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


def _iso_seconds(column: pl.Expr) -> pl.Expr:
    """Float64 UTC unix seconds of ISO-8601 strings; null where a value is not one."""
    text = (
        column.str.strip_chars()
        .str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
        .str.replace(r"[zZ]$", "+00:00")
    )
    aware = [
        text.str.to_datetime(fmt, time_unit="us", strict=False).dt.replace_time_zone(None) for fmt in _AWARE
    ]
    naive = [text.str.to_datetime(fmt, time_unit="us", strict=False) for fmt in _NAIVE]
    return pl.coalesce(*aware, *naive).dt.epoch("us").cast(pl.Float64) / 1e6


def _numbers(column: pl.Expr) -> pl.Expr:
    return column.str.strip_chars().cast(pl.Float64, strict=False)


def _is_iso(frame: pl.DataFrame) -> bool:
    """The column's kind, from its first non-blank value."""
    value = pl.col(TIMESTAMP).str.strip_chars()
    first = frame.lazy().select(value).filter(value.str.len_bytes() > 0).head(1).collect()
    return first.height > 0 and not looks_numeric(str(first.item()))


def _parsed(frame: pl.DataFrame, iso: bool) -> pl.DataFrame:
    column = pl.col(TIMESTAMP)
    parsed = _iso_seconds(column) if iso else _numbers(column)
    return frame.lazy().select(ROW, column.alias("raw"), parsed.alias(TIMESTAMP)).collect()


def _first_bad(parsed: pl.DataFrame) -> tuple[int, str] | None:
    """(row, raw value) of the first non-blank value that did not parse."""
    raw = pl.col("raw")
    bad = parsed.filter(raw.str.strip_chars().str.len_bytes() > 0, pl.col(TIMESTAMP).is_null()).head(1)
    return (int(bad[ROW][0]), str(bad["raw"][0])) if bad.height else None


def _error(info: SourceInfo, iso: bool, row: int, value: str) -> InvalidValueError:
    if iso:
        problem = f"{value!r} is not an ISO-8601 date/time"
        expected = f"{ISO_EXPECTED}, like the column's first value"
    else:
        problem = f"{value!r} is not a number"
        expected = f"{_NUMBER_EXPECTED} (or ISO-8601 date/times in every row)"
    return InvalidValueError(
        problem, path=info.path, column=info.raw(TIMESTAMP), expected=expected, **info.locate(row)
    )


def parse_timestamp_strings(frame: pl.DataFrame, info: SourceInfo) -> pl.DataFrame:
    """Replace a String ``timestamp`` column by Float64 numbers or UTC unix seconds (see the module).

    Blank values become null (validation reports them). Raises :class:`InvalidValueError` for the first
    value that is not of the column's kind.
    """
    iso = _is_iso(frame)
    parsed = _parsed(frame, iso)
    bad = _first_bad(parsed)
    if bad is not None:
        raise _error(info, iso, *bad)
    return frame.with_columns(parsed[TIMESTAMP])


def invalid_timestamp(frame: pl.DataFrame, info: SourceInfo) -> InvalidValueError | None:
    """The located error for the first bad value of a String ``timestamp`` column, or None."""
    iso = _is_iso(frame)
    bad = _first_bad(_parsed(frame, iso))
    return None if bad is None else _error(info, iso, *bad)
