"""Readers: every format to the canonical schema, gzip and encodings, and write -> read round trips."""

from __future__ import annotations

import datetime as dt
import gzip
import string
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.config import ColumnsConfig, SourceConfig
from recsys.data.columns import ITEM, RATING, ROW, TIMESTAMP, USER
from recsys.data.readers import read_interactions, scan_interactions
from tests.data.conftest import WriteFile


def read(path: Path, columns: dict[str, str | None] | None = None, **source: Any) -> pl.DataFrame:
    cfg = SourceConfig(path=path, columns=ColumnsConfig(**(columns or {})), **source)
    frame, _ = read_interactions(cfg)
    return frame


def triples(frame: pl.DataFrame) -> list[tuple[object, object, object]]:
    return list(zip(frame[USER].to_list(), frame[ITEM].to_list(), frame[TIMESTAMP].to_list(), strict=True))


# ------------------------------------------------------------------------------------------ csv / tsv
def test_csv_with_header(write_file: WriteFile) -> None:
    path = write_file("log.csv", "user_id,item_id,timestamp\n1,10,100\n2,20,50\n")
    frame = read(path)
    assert frame.columns == [USER, ITEM, TIMESTAMP, ROW]
    assert frame.schema[USER] == pl.Int64 and frame.schema[TIMESTAMP] == pl.Int64
    assert triples(frame) == [(1, 10, 100), (2, 20, 50)]
    assert frame[ROW].to_list() == [0, 1]


def test_csv_header_sniffed_and_columns_mapped(write_file: WriteFile) -> None:
    path = write_file("log.csv", "u,i,when,stars\na,x,5,4.5\nb,y,7,1\n")
    frame = read(path, columns={"user": "u", "item": "i", "timestamp": "when", "rating": "stars"})
    assert triples(frame) == [("a", "x", 5), ("b", "y", 7)]
    assert frame[RATING].to_list() == [4.5, 1.0]


def test_headerless_csv_positional_names(write_file: WriteFile) -> None:
    path = write_file("log.csv", "1,10,100\n2,20,50\n")
    frame = read(path, columns={"user": "column_1", "item": "column_2", "timestamp": "column_3"})
    assert triples(frame) == [(1, 10, 100), (2, 20, 50)]


def test_headerless_csv_with_column_names(write_file: WriteFile) -> None:
    path = write_file("log.csv", "1,10,100\n2,20,50\n")
    frame = read(path, has_header=False, column_names=["user_id", "item_id", "timestamp"])
    assert triples(frame) == [(1, 10, 100), (2, 20, 50)]


@pytest.mark.parametrize(("name", "sep"), [("log.tsv", "\t"), ("log.csv", ";"), ("log.txt", "|")])
def test_delimiters_sniffed(write_file: WriteFile, name: str, sep: str) -> None:
    path = write_file(name, f"user_id{sep}item_id{sep}timestamp\n1{sep}10{sep}100\n2{sep}20{sep}50\n")
    assert triples(read(path)) == [(1, 10, 100), (2, 20, 50)]


def test_implied_order_when_timestamp_is_null(write_file: WriteFile) -> None:
    path = write_file("log.csv", "user_id,item_id\n1,10\n1,11\n")
    frame = read(path, columns={"timestamp": None})
    assert triples(frame) == [(1, 10, 0), (1, 11, 1)]


def test_blank_lines_are_skipped_but_rows_keep_their_position(write_file: WriteFile) -> None:
    path = write_file("log.csv", "user_id,item_id,timestamp\n1,10,100\n\n2,20,50\n\n")
    frame = read(path)
    assert triples(frame) == [(1, 10, 100), (2, 20, 50)]
    assert frame[ROW].to_list() == [0, 2]


def test_late_string_ids_and_float_timestamps_widen_the_type(write_file: WriteFile) -> None:
    # Polars infers types from the first rows; a later string id or fractional time must still read.
    rows = [f"{u},{u},{u}" for u in range(300)] + ["abc,def,300.5"]
    path = write_file("log.csv", "user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    frame = read(path)
    assert frame.schema[USER] == pl.String and frame.schema[TIMESTAMP] == pl.Float64
    assert frame.row(-1)[:3] == ("abc", "def", 300.5)


def test_whole_float_timestamps_become_integers(write_file: WriteFile) -> None:
    path = write_file("log.csv", "user_id,item_id,timestamp\n1,10,100.0\n2,20,50.0\n")
    frame = read(path)
    assert frame.schema[TIMESTAMP] == pl.Int64
    assert frame[TIMESTAMP].to_list() == [100, 50]


# ------------------------------------------------------------------------------------------ named formats
def test_movielens_dat(write_file: WriteFile) -> None:
    path = write_file("ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    cfg = SourceConfig(path=path)
    frame, info = read_interactions(cfg)
    assert info.format == "movielens_dat" and info.encoding == "iso8859-1"
    assert triples(frame) == [(1, 1193, 978300760), (1, 661, 978302109)]
    assert frame[RATING].to_list() == [5.0, 3.0]


def test_movielens_csv(write_file: WriteFile) -> None:
    path = write_file(
        "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n"
    )
    frame, info = read_interactions(SourceConfig(path=path))
    assert info.format == "movielens_csv"
    assert triples(frame) == [(1, 1, 964982703), (1, 3, 964981247)]
    assert frame[RATING].to_list() == [4.0, 4.5]


def test_sasrec_txt_order_is_line_order(write_file: WriteFile) -> None:
    path = write_file("seq.txt", "1 5\n1 3\n2 5\n")
    frame, info = read_interactions(SourceConfig(path=path))
    assert info.format == "sasrec_txt" and info.implied_order
    assert triples(frame) == [(1, 5, 0), (1, 3, 1), (2, 5, 2)]


def test_recbole_inter_typed_header(write_file: WriteFile) -> None:
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n"
    path = write_file("ml.inter", text)
    frame, info = read_interactions(SourceConfig(path=path, columns=ColumnsConfig(rating="rating")))
    assert info.format == "recbole_inter"
    assert triples(frame) == [(196, 242, 881250949)]
    assert frame[RATING].to_list() == [3.0]


def test_parquet_with_mapping_and_datetimes(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    when = [dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2020, 1, 2, tzinfo=dt.timezone.utc)]
    pl.DataFrame({"who": ["a", "b"], "what": [7, 8], "when": when}).write_parquet(path)
    frame = read(path, columns={"user": "who", "item": "what", "timestamp": "when"})
    assert triples(frame) == [("a", 7, 1577836800), ("b", 8, 1577923200)]


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("ratings.dat", "1::10::5::100\n2::20::3::50\n", "movielens_dat"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,10,5,100\n2,20,3,50\n", "movielens_csv"),
        ("seq.txt", "1 10\n2 20\n", "sasrec_txt"),
        (
            "x.inter",
            "user_id:token\titem_id:token\ttimestamp:float\n1\t10\t100\n2\t20\t50\n",
            "recbole_inter",
        ),
        ("log.csv", "user_id,item_id,timestamp\n1,10,100\n2,20,50\n", "csv"),
        ("log.tsv", "user_id\titem_id\ttimestamp\n1\t10\t100\n2\t20\t50\n", "tsv"),
    ],
)
def test_gzip_variants_read_like_plain_files(write_file: WriteFile, name: str, text: str, fmt: str) -> None:
    plain = write_file(name, text)
    packed = write_file(name + ".gz", text, gz=True)
    plain_scan = scan_interactions(SourceConfig(path=plain))
    packed_scan = scan_interactions(SourceConfig(path=packed))
    assert plain_scan.info.format == packed_scan.info.format == fmt
    assert packed_scan.info.compressed
    assert read(plain).equals(read(packed))


def test_latin1_text_is_transcoded(write_file: WriteFile) -> None:
    path = write_file("log.csv", "user_id,item_id,timestamp\nJosé,Amélie,1\n", encoding="latin-1")
    frame = read(path, encoding="latin-1")
    assert frame[USER].to_list() == ["José"] and frame[ITEM].to_list() == ["Amélie"]


def test_latin1_gzip_movielens(write_file: WriteFile) -> None:
    path = write_file("ratings.dat.gz", "1::10::5::100\n", gz=True, encoding="latin-1")
    assert triples(read(path)) == [(1, 10, 100)]


# ------------------------------------------------------------------------------------------ round trips
@st.composite
def logs(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(min_value=1, max_value=40))
    string_users = draw(st.booleans())
    # A letter prefix keeps string ids strings (a bare "nan" or "1e5" would parse as a number).
    letters = st.text(alphabet=string.ascii_lowercase + string.digits, max_size=5).map(lambda s: "u" + s)
    user = letters if string_users else st.integers(0, 10**9)
    users = draw(st.lists(user, min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n))
    return pl.DataFrame({"user_id": users, "item_id": items, "timestamp": times})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log=logs(), kind=st.sampled_from(["csv", "tsv", "parquet", "csv.gz"]))
def test_round_trip_write_read(tmp_path: Path, log: pl.DataFrame, kind: str) -> None:
    path = tmp_path / f"log.{kind}"
    if kind == "parquet":
        log.write_parquet(path)
    else:
        text = log.write_csv(separator="\t" if kind == "tsv" else ",")
        path.write_bytes(gzip.compress(text.encode()) if kind.endswith(".gz") else text.encode())
    frame = read(path)
    assert frame[USER].cast(log.schema["user_id"]).to_list() == log["user_id"].to_list()
    assert frame[ITEM].to_list() == log["item_id"].to_list()
    assert frame[TIMESTAMP].to_list() == log["timestamp"].to_list()
    assert frame[ROW].to_list() == list(range(log.height))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)), min_size=1, max_size=50))
def test_round_trip_sasrec_txt(tmp_path: Path, pairs: list[tuple[int, int]]) -> None:
    path = tmp_path / "seq.txt"
    path.write_text("".join(f"{u} {i}\n" for u, i in pairs))
    frame = read(path)
    assert list(zip(frame[USER].to_list(), frame[ITEM].to_list(), strict=True)) == pairs
    assert frame[TIMESTAMP].to_list() == list(range(len(pairs)))
