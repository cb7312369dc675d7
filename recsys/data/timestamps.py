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

import re

import polars as pl

from recsys.data.columns import ROW, TIMESTAMP
from recsys.data.errors import InvalidValueError
from recsys.data.sniff import looks_numeric
from recsys.data.source import SourceInfo

__all__ = ["ISO_EXPECTED", "invalid_timestamp", "parse_timestamp_strings"]

ISO_EXPECTED = "an ISO-8601 date or date-time (2020-01-02, 2020-01-02T03:04:05, optionally Z or +01:00)"
_NUMBER_EXPECTED = "a number (unix time)"
# The general parse: with an offset (Z is rewritten as +00:00 first), converted to UTC; without, taken as UTC.
_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
# The shape of one value, to parse a whole column with one exact format (12x faster than the general
# parse on 1M rows; the values that do not fit it, if any, get the general parse).
_SHAPE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:(?P<sep>[T ])\d{2}:\d{2}(?P<sec>:\d{2})?(?P<frac>\.\d+)?)?"
    r"(?P<zone>[zZ]|[+-]\d{2}:?\d{2})?"
)


def _format_of(value: str) -> str | None:
    """The exact chrono format of one ISO-8601 value, or None when it is not one we read."""
    shape = _SHAPE.fullmatch(value)
    if shape is None:
        return None
    fmt = "%Y-%m-%d"
    if shape["sep"]:
        fmt += shape["sep"] + "%H:%M" + (":%S" if shape["sec"] else "") + ("%.f" if shape["frac"] else "")
    zone = shape["zone"]
    return fmt + ("" if not zone else zone if zone in "zZ" else "%z")


def _to_naive_utc(text: pl.Series, fmt: str) -> pl.Series:
    parsed = text.str.to_datetime(fmt, time_unit="us", strict=False, cache=False)
    return parsed.dt.replace_time_zone(None) if "%z" in fmt else parsed


def _general(text: pl.Series) -> pl.Series:
    """Every accepted form, value by value (slow: several parses of each value)."""
    text = text.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T").str.replace(r"[zZ]$", "+00:00")
    return pl.select(pl.coalesce(*(_to_naive_utc(text, fmt) for fmt in (*_AWARE, *_NAIVE)))).to_series()


def _iso_seconds(text: pl.Series) -> pl.Series:
    """Float64 UTC unix seconds of stripped ISO-8601 strings; null where a value is not one."""
    present = text.filter(text.str.len_bytes() > 0)
    fmt = _format_of(str(present[0])) if len(present) else None
    parsed = _to_naive_utc(text, fmt) if fmt else pl.Series(text.name, [None] * len(text), pl.Datetime("us"))
    missed = (parsed.is_null() & (text.str.len_bytes() > 0)).arg_true()
    if len(missed):
        parsed = parsed.scatter(missed, _general(text.gather(missed)))
    return parsed.dt.epoch("us").cast(pl.Float64) / 1e6


def _parsed(frame: pl.DataFrame) -> tuple[bool, pl.Series]:
    """(whether the column is ISO-8601, its values as Float64 seconds; null where blank or bad)."""
    text = frame[TIMESTAMP].str.strip_chars()
    first = text.filter(text.str.len_bytes() > 0).head(1)
    iso = len(first) > 0 and not looks_numeric(str(first[0]))
    values = _iso_seconds(text) if iso else text.cast(pl.Float64, strict=False)
    return iso, values.alias(TIMESTAMP)


def _first_bad(frame: pl.DataFrame, values: pl.Series) -> tuple[int, str] | None:
    """(row, raw value) of the first non-blank value that did not parse."""
    raw = frame[TIMESTAMP]
    bad = (values.is_null() & (raw.str.strip_chars().str.len_bytes() > 0)).arg_true().head(1)
    return (int(frame[ROW][bad[0]]), str(raw[bad[0]])) if len(bad) else None


def _error(info: SourceInfo, iso: bool, row: int, value: str) -> InvalidValueError:
    if iso:
        problem = f"{value!r} is not an ISO-8601 date/time"
        expected = f"{ISO_EXPECTED}, as the column's first value is"
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
    iso, values = _parsed(frame)
    bad = _first_bad(frame, values)
    if bad is not None:
        raise _error(info, iso, *bad)
    return frame.with_columns(values)


def invalid_timestamp(frame: pl.DataFrame, info: SourceInfo) -> InvalidValueError | None:
    """The located error for the first bad value of a String ``timestamp`` column, or None."""
    iso, values = _parsed(frame)
    bad = _first_bad(frame, values)
    return None if bad is None else _error(info, iso, *bad)
