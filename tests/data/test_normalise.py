"""Canonical dtypes of ids, timestamps and ratings."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import polars as pl
import pytest

from recsys.data.columns import ITEM, RATING, ROW, TIMESTAMP, USER
from recsys.data.errors import InvalidValueError
from recsys.data.normalise import drop_blank_rows, normalise_ids, numeric_rating, numeric_timestamps
from recsys.data.source import SourceInfo

INFO = SourceInfo(
    path=Path("log.csv"),
    format="csv",
    compressed=False,
    encoding="utf-8",
    separator=",",
    has_header=True,
    implied_order=False,
    raw_columns={USER: "u", ITEM: "i", TIMESTAMP: "t", RATING: "r"},
)


def frame(**columns: object) -> pl.DataFrame:
    data = {USER: [1, 2], ITEM: [3, 4], TIMESTAMP: [5, 6], **columns}
    return pl.DataFrame(data).with_row_index(ROW)


def test_ids_become_int64_or_string() -> None:
    out = normalise_ids(frame(user=[1.0, 2.0], item=[1.5, 2.0]))
    assert out.schema[USER] == pl.Int64 and out.schema[ITEM] == pl.String
    assert out[ITEM].to_list() == ["1.5", "2.0"]


def test_timestamps_whole_floats_datetimes_nan() -> None:
    assert numeric_timestamps(frame(timestamp=[5.0, 6.0]), INFO).schema[TIMESTAMP] == pl.Int64
    fractional = numeric_timestamps(frame(timestamp=[5.5, 6.0]), INFO)
    assert fractional[TIMESTAMP].to_list() == [5.5, 6.0]
    nan = numeric_timestamps(frame(timestamp=[math.nan, 6.0]), INFO)
    assert nan[TIMESTAMP].null_count() == 1
    when = [dt.datetime(1970, 1, 1, 0, 0, 1), dt.datetime(1970, 1, 1, 0, 0, 2, 500_000)]
    assert numeric_timestamps(frame(timestamp=when), INFO)[TIMESTAMP].to_list() == [1.0, 2.5]
    days = numeric_timestamps(frame(timestamp=[dt.date(1970, 1, 2), dt.date(1970, 1, 3)]), INFO)
    assert days[TIMESTAMP].to_list() == [86_400, 172_800]


def test_string_timestamps_parse_or_fail_with_the_line() -> None:
    assert numeric_timestamps(frame(timestamp=["5", " 6 "]), INFO)[TIMESTAMP].to_list() == [5, 6]
    with pytest.raises(InvalidValueError, match=r"line 3, column 't': 'x' is not a number"):
        numeric_timestamps(frame(timestamp=["5", "x"]), INFO)
    with pytest.raises(InvalidValueError, match="dtype"):
        numeric_timestamps(frame(timestamp=[True, False]), INFO)


def test_ratings() -> None:
    assert numeric_rating(frame(rating=[4, 5]), INFO)[RATING].to_list() == [4.0, 5.0]
    with pytest.raises(InvalidValueError, match="column 'r'"):
        numeric_rating(frame(rating=["4", "great"]), INFO)


def test_blank_rows() -> None:
    data = frame(user=[1, None], item=[3, None], timestamp=[5, None])
    assert drop_blank_rows(data, INFO)[ROW].to_list() == [0]
    half = frame(user=[1, None], item=[3, 4])
    assert drop_blank_rows(half, INFO).height == 2  # a null id is not a blank line: validation decides
