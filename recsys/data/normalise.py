"""Canonical dtypes for a freshly read frame: blank rows, ids, timestamps, ratings.

Ids become Int64 (any integer type, or floats that are all whole) or String (anything else). Timestamps
become Int64 when every value is a whole number (RecBole writes ``timestamp:float``) and Float64 otherwise;
datetimes and ISO-8601 strings become unix seconds; NaN becomes null. A value that is not a time is an
:class:`~recsys.data.errors.InvalidValueError` naming its line (text) or row (parquet).
"""

from __future__ import annotations

import polars as pl

from recsys.data.columns import ITEM, RATING, ROW, TIMESTAMP, USER
from recsys.data.diagnose import locate_first_invalid
from recsys.data.errors import InvalidValueError
from recsys.data.source import SourceInfo
from recsys.data.timestamps import parse_timestamp_strings

__all__ = ["drop_blank_rows", "normalise_ids", "numeric_rating", "numeric_timestamps"]

_ID_COLUMNS = (USER, ITEM)
# Float64 holds every integer below 2**53 exactly.
_FLOAT_EXACT = 2.0**53


def drop_blank_rows(frame: pl.DataFrame, info: SourceInfo) -> pl.DataFrame:
    """Blank lines read as all-null rows: drop them (they are not interactions)."""
    raw = [c for c in frame.columns if c != ROW and not (c == TIMESTAMP and info.implied_order)]
    if any(frame[c].null_count() == 0 for c in raw):
        return frame  # some column has no null at all, so no row is all-null: skip copying the frame
    blank = pl.all_horizontal([pl.col(c).is_null() for c in raw])
    return frame.filter(~blank)


def normalise_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """Ids are Int64 (any integer type, or whole floats) or String (anything else)."""
    out = []
    for name in _ID_COLUMNS:
        dtype = frame.schema[name]
        column = pl.col(name)
        whole_floats = dtype.is_float() and bool(frame.select((column == column.floor()).all()).item())
        if (dtype.is_integer() and dtype != pl.UInt64) or whole_floats:
            out.append(column.cast(pl.Int64))
        elif dtype != pl.String:
            out.append(column.cast(pl.String))
    return frame.with_columns(out) if out else frame


def _not_numeric(info: SourceInfo, canonical: str, row: int, value: str) -> InvalidValueError:
    return InvalidValueError(
        f"{value!r} is not a number",
        path=info.path,
        column=info.raw(canonical),
        expected="a number" + (" (unix time)" if canonical == TIMESTAMP else ""),
        **info.locate(row),
    )


def _bad_dtype(info: SourceInfo, canonical: str, dtype: pl.DataType) -> InvalidValueError:
    return InvalidValueError(
        f"column has dtype {dtype}",
        path=info.path,
        column=info.raw(canonical),
        expected="numbers" + (" or datetimes" if canonical == TIMESTAMP else ""),
    )


def numeric_timestamps(frame: pl.DataFrame, info: SourceInfo) -> pl.DataFrame:
    """Timestamps as Int64 (whole numbers) or Float64; reject values that are not times, with their line.

    Strings are numbers or ISO-8601 date/times (UTC unix seconds), see :mod:`recsys.data.timestamps`.
    """
    if info.implied_order:
        return frame
    dtype = frame.schema[TIMESTAMP]
    column = pl.col(TIMESTAMP)
    if isinstance(dtype, pl.Datetime):
        column = column.dt.epoch("us").cast(pl.Float64) / 1e6
    elif isinstance(dtype, pl.Date):
        column = column.dt.epoch("s")
    elif dtype == pl.String:
        frame = parse_timestamp_strings(frame, info)
    elif not dtype.is_numeric():
        raise _bad_dtype(info, TIMESTAMP, dtype)
    frame = frame.with_columns(column.alias(TIMESTAMP))
    if frame.schema[TIMESTAMP].is_float():
        # NaN is no time at all: make it null so that validation reports it like an empty field.
        frame = frame.with_columns(pl.col(TIMESTAMP).fill_nan(None))
        ts = frame[TIMESTAMP]
        largest = ts.abs().max()
        whole = bool((ts == ts.floor()).all())
        # Whole floats (RecBole's timestamp:float) become exact integers, which also sort faster.
        if whole and largest is not None and float(largest) < _FLOAT_EXACT:  # type: ignore[arg-type]
            frame = frame.with_columns(pl.col(TIMESTAMP).cast(pl.Int64))
    elif frame.schema[TIMESTAMP] != pl.Int64:
        frame = frame.with_columns(pl.col(TIMESTAMP).cast(pl.Int64))
    return frame


def numeric_rating(frame: pl.DataFrame, info: SourceInfo) -> pl.DataFrame:
    """Ratings as Float64; reject non-numeric values with their line."""
    if RATING not in frame.columns:
        return frame
    dtype = frame.schema[RATING]
    if dtype == pl.String:
        bad = locate_first_invalid(frame, RATING, pl.Float64())
        if bad is not None:
            raise _not_numeric(info, RATING, *bad)
        return frame.with_columns(pl.col(RATING).str.strip_chars().cast(pl.Float64))
    if not dtype.is_numeric():
        raise _bad_dtype(info, RATING, dtype)
    return frame.with_columns(pl.col(RATING).cast(pl.Float64))
