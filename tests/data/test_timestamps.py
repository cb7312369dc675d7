"""ISO-8601 text timestamps: read as UTC unix seconds like every datetime, bad values located."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.config import SourceConfig
from recsys.data.columns import ITEM, TIMESTAMP
from recsys.data.errors import InvalidValueError
from recsys.data.pipeline import build
from recsys.data.readers import read_interactions
from tests.data.conftest import WriteFile, data_config

HEADER = "user_id,item_id,timestamp\n"


def unix(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, **kw: int
) -> float:
    """Seconds since the epoch, computed by the standard library (the independent answer).

    ``offset_minutes``: the UTC offset the wall time is written in; ``micro``: microseconds.
    """
    zone = dt.timezone(dt.timedelta(minutes=kw.get("offset_minutes", 0)))
    when = dt.datetime(year, month, day, hour, minute, second, kw.get("micro", 0), tzinfo=zone)
    return when.timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-01-02T03:04:05", unix(2020, 1, 2, 3, 4, 5)),
        ("2020-01-02T03:04:05Z", unix(2020, 1, 2, 3, 4, 5)),
        ("2020-01-02T03:04:05z", unix(2020, 1, 2, 3, 4, 5)),
        ("2020-01-02T03:04:05+01:00", unix(2020, 1, 2, 3, 4, 5, offset_minutes=60)),
        ("2020-01-02T03:04:05-0230", unix(2020, 1, 2, 3, 4, 5, offset_minutes=-150)),
        ("2020-01-02 03:04:05", unix(2020, 1, 2, 3, 4, 5)),
        ("2020-01-02T03:04", unix(2020, 1, 2, 3, 4)),
        ("2020-01-02", unix(2020, 1, 2)),
        (" 2020-01-02 ", unix(2020, 1, 2)),
    ],
)
def test_iso_forms_become_utc_unix_seconds(write_file: WriteFile, text: str, expected: float) -> None:
    path = write_file("log.csv", f"{HEADER}1,10,{text}\n2,20,1970-01-01T00:00:00\n")
    frame, _ = read_interactions(SourceConfig(path=path))
    # Whole seconds: the same Int64 type as numeric unix timestamps, so sorting and splits are unchanged.
    assert frame.schema[TIMESTAMP] == pl.Int64
    assert frame[TIMESTAMP].to_list() == [int(expected), 0]


def test_fractional_seconds_stay_fractional(write_file: WriteFile) -> None:
    path = write_file("log.csv", f"{HEADER}1,10,2020-01-02T03:04:05.250Z\n")
    frame, _ = read_interactions(SourceConfig(path=path))
    assert frame.schema[TIMESTAMP] == pl.Float64
    assert frame[TIMESTAMP].to_list() == [unix(2020, 1, 2, 3, 4, 5, micro=250_000)]


def test_offsets_order_events_by_the_instant_not_the_text(write_file: WriteFile) -> None:
    # 03:30+01:00 is 02:30 UTC, before 03:00Z; as text it sorts after.
    lines = "1,10,2020-01-02T03:30:00+01:00\n1,11,2020-01-02T03:00:00Z\n1,12,2020-01-02T02:00:00Z\n"
    built = build(data_config(write_file("log.csv", HEADER + lines)))
    order = built.interactions.sort(TIMESTAMP)[ITEM].to_list()
    assert [built.items.ids[i - 1] for i in order] == [12, 10, 11]


def test_iso_strings_in_parquet(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pl.DataFrame(
        {"user_id": [1, 2], "item_id": [3, 4], "timestamp": ["2020-01-02", "2020-01-03"]}
    ).write_parquet(path)
    frame, _ = read_interactions(SourceConfig(path=path))
    assert frame[TIMESTAMP].to_list() == [int(unix(2020, 1, 2)), int(unix(2020, 1, 3))]


@pytest.mark.parametrize(
    ("value", "reason"),
    [("2020-13-01T00:00:00", "month 13"), ("2020-02-30", "no such day"), ("yesterday", "not a date")],
)
def test_bad_iso_value_is_located(write_file: WriteFile, value: str, reason: str) -> None:
    path = write_file("log.csv", f"{HEADER}1,10,2020-01-02T03:04:05\n1,11,{value}\n")
    with pytest.raises(InvalidValueError) as caught:
        read_interactions(SourceConfig(path=path))
    err = caught.value
    assert (err.path, err.line, err.column) == (path, 3, "timestamp"), reason
    assert f"{value!r} is not an ISO-8601 date/time" in str(err)
    assert "expected an ISO-8601 date or date-time" in str(err) and str(path) in str(err)


def test_date_in_a_numeric_column_is_located_after_schema_inference(write_file: WriteFile) -> None:
    # Polars infers Int64 from the first rows; the date on line 602 must still be found and located.
    rows = "".join(f"{u},{u},{1_000 + u}\n" for u in range(600))
    path = write_file("log.csv", f"{HEADER}{rows}7,7,2020-01-02\n")
    with pytest.raises(InvalidValueError) as caught:
        read_interactions(SourceConfig(path=path))
    assert (caught.value.line, caught.value.column) == (602, "timestamp")
    assert "'2020-01-02' is not a number" in str(caught.value)


def test_late_bad_value_in_an_iso_column(write_file: WriteFile) -> None:
    rows = "".join(f"{u},{u},2020-01-02T00:00:{u % 60:02d}\n" for u in range(600))
    path = write_file("log.csv", f"{HEADER}{rows}7,7,2020-01-02T25:00:00\n")
    with pytest.raises(InvalidValueError) as caught:
        read_interactions(SourceConfig(path=path))
    assert (caught.value.line, caught.value.column) == (602, "timestamp")


def test_bad_rating_beside_iso_timestamps_blames_the_rating(write_file: WriteFile) -> None:
    text = "user_id,item_id,timestamp,rating\n1,10,2020-01-02T03:04:05Z,4\n2,20,2020-01-03,good\n"
    path = write_file("log.csv", text)
    with pytest.raises(InvalidValueError) as caught:
        read_interactions(SourceConfig(path=path, columns={"rating": "rating"}))
    assert (caught.value.line, caught.value.column) == (3, "rating")


def test_blank_iso_value_is_a_null_timestamp(write_file: WriteFile) -> None:
    path = write_file("log.csv", f"{HEADER}1,10,2020-01-02\n1,11,\n")
    with pytest.raises(InvalidValueError, match=r"line 3, column 'timestamp': timestamp is empty"):
        build(data_config(path))


# How each form is written by the standard library (None: isoformat, which writes "+01:00" offsets).
_SHAPES: dict[str, str | None] = {
    "date": "%Y-%m-%d",
    "minutes": "%Y-%m-%dT%H:%M",
    "seconds": "%Y-%m-%dT%H:%M:%S",
    "space": "%Y-%m-%d %H:%M:%S",
    "zulu": "%Y-%m-%dT%H:%M:%SZ",
    "offset": "%Y-%m-%dT%H:%M:%S%z",
    "colon_offset": None,
}
_AWARE_SHAPES = ("offset", "colon_offset")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.tuples(
            st.datetimes(dt.datetime(1971, 1, 1), dt.datetime(2100, 1, 1)),
            st.sampled_from(sorted(_SHAPES)),
            st.integers(-12 * 4, 14 * 4).map(lambda quarters: quarters * 15),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_any_mix_of_forms_matches_python(tmp_path: Path, events: list[tuple[dt.datetime, str, int]]) -> None:
    # The column is parsed with the first value's exact format, the others by the general parse: both
    # must give the instant the standard library computes.
    lines, expected = [], []
    for when, shape, offset_minutes in events:
        zone = dt.timezone(dt.timedelta(minutes=offset_minutes if shape in _AWARE_SHAPES else 0))
        local = when.replace(microsecond=0, tzinfo=zone)
        if shape == "date":
            local = local.replace(hour=0, minute=0, second=0)
        elif shape == "minutes":
            local = local.replace(second=0)
        fmt = _SHAPES[shape]
        lines.append(local.isoformat() if fmt is None else local.strftime(fmt))
        expected.append(int(local.timestamp()))
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "".join(f"1,{k},{text}\n" for k, text in enumerate(lines)))
    frame, _ = read_interactions(SourceConfig(path=path))
    assert frame[TIMESTAMP].to_list() == expected, lines
