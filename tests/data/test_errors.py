"""Bad input: every case gets a located DataError subclass, and prepare() writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from recsys.data.errors import (
    DataError,
    DelimiterError,
    EmptyResultError,
    EmptySourceError,
    EncodingError,
    InvalidValueError,
    MissingColumnError,
    NotAFileError,
    RaggedRowError,
    SourceFormatError,
    SourceNotFoundError,
)
from recsys.data.pipeline import build, prepare
from tests.data.conftest import WriteFile, data_config

HEADER = "user_id,item_id,timestamp\n"


def fails(path: Path, error: type[DataError], **cfg: Any) -> DataError:
    """Build from ``path`` and return the error, which must name the file."""
    with pytest.raises(error) as caught:
        build(data_config(path, **cfg))
    assert str(path) in str(caught.value)
    return caught.value


def test_missing_file(tmp_path: Path) -> None:
    err = fails(tmp_path / "nope.csv", SourceNotFoundError)
    assert "not found" in str(err)


def test_directory_is_not_a_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text(HEADER + "1,2,3\n")
    err = fails(folder, NotAFileError)
    assert f"{folder}: is a directory, expected a file (it holds ratings.csv)" in str(err)
    assert "not found" not in str(err)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(write_file: WriteFile, content: str) -> None:
    err = fails(write_file("log.csv", content), EmptySourceError)
    assert "empty" in str(err)


def test_empty_gzip_file(write_file: WriteFile) -> None:
    fails(write_file("log.csv.gz", "", gz=True), EmptySourceError)


def test_header_without_rows(write_file: WriteFile) -> None:
    err = fails(write_file("log.csv", HEADER), EmptySourceError)
    assert "no data rows" in str(err)


def test_missing_column_lists_available(write_file: WriteFile) -> None:
    path = write_file("log.csv", "uid,item_id,timestamp\n1,10,100\n")
    err = fails(path, MissingColumnError)
    assert err.column == "user_id"
    assert "'uid', 'item_id', 'timestamp'" in str(err)


def test_misnamed_column_case(write_file: WriteFile) -> None:
    path = write_file("log.csv", "User_Id,item_id,timestamp\n1,10,100\n")
    err = fails(path, MissingColumnError)
    assert "'User_Id'" in str(err) and "expected" in str(err)


def test_headerless_file_hints_at_column_names(write_file: WriteFile) -> None:
    path = write_file("log.csv", "1,10,100\n2,20,200\n")
    err = fails(path, MissingColumnError)
    assert "column_1" in str(err) and "column_names" in str(err)


def test_wrong_delimiter(write_file: WriteFile) -> None:
    path = write_file("log.csv", "user_id\titem_id\ttimestamp\n1\t10\t100\n")
    err = fails(path, DelimiterError, delimiter=",")
    assert err.line == 1 and "'\\t'-separated" in str(err)


def test_sasrec_format_on_tab_separated_file(write_file: WriteFile) -> None:
    path = write_file("seq.txt", "1\t10\n2\t20\n")
    err = fails(path, DelimiterError, format="sasrec_txt")
    assert err.line == 1


def test_movielens_dat_with_wrong_field_count(write_file: WriteFile) -> None:
    err = fails(write_file("ratings.dat", "1::10::5\n"), DelimiterError)
    assert "UserID::MovieID::Rating::Timestamp" in str(err)


def test_ragged_row_with_too_many_fields(write_file: WriteFile) -> None:
    path = write_file("log.csv", HEADER + "1,10,100\n2,20,200\n3,30,300,9\n4,40,400\n")
    err = fails(path, RaggedRowError)
    assert err.line == 4 and "4 field(s)" in str(err) and "expected 3 fields" in str(err)


def test_ragged_row_with_too_few_fields(write_file: WriteFile) -> None:
    path = write_file("log.csv", HEADER + "1,10,100\n2,20\n3,30,300\n")
    err = fails(path, RaggedRowError)
    assert err.line == 3 and "2 field(s)" in str(err)


def test_ragged_movielens_dat_line(write_file: WriteFile) -> None:
    path = write_file("ratings.dat", "1::10::5::100\n1::11::4\n")
    err = fails(path, RaggedRowError)
    assert err.line == 2


def test_non_numeric_timestamp(write_file: WriteFile) -> None:
    path = write_file("log.csv", HEADER + "1,10,100\n2,20,yesterday\n")
    err = fails(path, InvalidValueError)
    assert (err.line, err.column) == (3, "timestamp")
    assert "'yesterday' is not a number" in str(err) and "expected a number (unix time)" in str(err)


def test_non_numeric_timestamp_after_schema_inference(write_file: WriteFile) -> None:
    rows = "".join(f"{u},{u},{u}\n" for u in range(500))
    path = write_file("log.csv", HEADER + rows + "7,7,soon\n")
    err = fails(path, InvalidValueError)
    assert (err.line, err.column) == (502, "timestamp")


def test_negative_timestamp(write_file: WriteFile) -> None:
    path = write_file("log.csv", HEADER + "1,10,100\n2,20,-5\n")
    err = fails(path, InvalidValueError)
    assert (err.line, err.column) == (3, "timestamp") and "negative" in str(err)


def test_null_timestamp(write_file: WriteFile) -> None:
    path = write_file("log.csv", HEADER + "1,10,100\n2,20,\n")
    err = fails(path, InvalidValueError)
    assert (err.line, err.column) == (3, "timestamp") and "empty" in str(err)


@pytest.mark.parametrize(("line", "column"), [("  ,10,100", "user_id"), ("2,,100", "item_id")])
def test_null_id_is_an_error_by_default(write_file: WriteFile, line: str, column: str) -> None:
    path = write_file("log.csv", HEADER + "1,10,100\n" + line.strip() + "\n")
    err = fails(path, InvalidValueError)
    assert (err.line, err.column) == (3, column) and "null_ids" in str(err)


def test_null_ids_dropped_by_policy(write_file: WriteFile) -> None:
    path = write_file("log.csv", HEADER + "1,10,100\n,11,101\n2,,102\n2,12,103\n")
    built = build(data_config(path, cleaning={"null_ids": "drop"}))
    assert built.interactions.height == 2
    assert built.filters[0].step == "null_ids" and built.filters[0].rows_removed == 2


def test_non_numeric_rating(write_file: WriteFile) -> None:
    path = write_file("log.csv", "user_id,item_id,timestamp,rating\n1,10,100,4\n2,20,200,good\n")
    err = fails(path, InvalidValueError, columns={"rating": "rating"})
    assert (err.line, err.column) == (3, "rating")


def test_invalid_utf8(write_file: WriteFile) -> None:
    path = write_file("log.csv", HEADER.encode() + b"1,10,100\n2,caf\xe9,200\n")
    err = fails(path, EncodingError)
    assert (err.line, err.column) == (3, "item_id") and "utf-8" in str(err)


def test_invalid_in_declared_ascii(write_file: WriteFile) -> None:
    path = write_file("log.csv", HEADER.encode() + b"1,10,100\n2,caf\xe9,200\n")
    err = fails(path, EncodingError, encoding="ascii")
    assert err.line == 3


def test_unknown_encoding_name(write_file: WriteFile) -> None:
    fails(write_file("log.csv", HEADER + "1,10,100\n"), SourceFormatError, encoding="klingon")


def test_parquet_non_numeric_timestamp_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pl.DataFrame({"user_id": [1, 2], "item_id": [3, 4], "timestamp": ["5", "later"]}).write_parquet(path)
    err = fails(path, InvalidValueError)
    assert (err.row, err.column) == (1, "timestamp")


def test_not_a_parquet_file(write_file: WriteFile) -> None:
    fails(write_file("log.parquet", "this is not parquet\n"), SourceFormatError)


def test_k_core_removing_everyone(write_file: WriteFile) -> None:
    path = write_file("log.csv", HEADER + "1,10,100\n1,11,101\n2,10,102\n")
    err = fails(path, EmptyResultError, cleaning={"min_user_interactions": 3})
    assert "k_core removed every interaction" in str(err)


def test_rating_threshold_removing_everyone(write_file: WriteFile) -> None:
    path = write_file("log.csv", "user_id,item_id,timestamp,rating\n1,10,100,1\n2,20,200,2\n")
    err = fails(path, EmptyResultError, columns={"rating": "rating"}, cleaning={"rating_threshold": 4})
    assert "rating_threshold" in str(err)


def test_rating_threshold_without_rating_column(write_file: WriteFile) -> None:
    path = write_file("log.csv", HEADER + "1,10,100\n")
    fails(path, MissingColumnError, cleaning={"rating_threshold": 4})


BAD_INPUTS: dict[str, tuple[str, bytes]] = {
    "empty": ("log.csv", b""),
    "missing_column": ("log.csv", b"uid,item_id,timestamp\n1,2,3\n"),
    "ragged": ("log.csv", HEADER.encode() + b"1,2,3\n1,2,3,4\n"),
    "bad_timestamp": ("log.csv", HEADER.encode() + b"1,2,x\n"),
    "null_user": ("log.csv", HEADER.encode() + b",2,3\n"),
    "bad_utf8": ("log.csv", HEADER.encode() + b"1,\xff,3\n"),
    "everyone_filtered": ("log.csv", HEADER.encode() + b"1,2,3\n"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_nothing_is_written_on_bad_input(tmp_path: Path, case: str) -> None:
    name, content = BAD_INPUTS[case]
    source = tmp_path / "in" / name
    source.parent.mkdir()
    source.write_bytes(content)
    out = tmp_path / "out" / "prepared"
    cfg = data_config(source, output_dir=out, cleaning={"min_user_interactions": 2})
    with pytest.raises(DataError):
        prepare(cfg)
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_failed_rebuild_keeps_the_previous_dataset(write_file: WriteFile, tmp_path: Path) -> None:
    path = write_file("log.csv", HEADER + "1,10,100\n1,11,101\n")
    out = tmp_path / "prepared"
    prepare(data_config(path, output_dir=out))
    before = sorted(p.name for p in out.iterdir())
    path.write_text(HEADER + "1,10,100\n1,11,oops\n")
    with pytest.raises(InvalidValueError):
        prepare(data_config(path, output_dir=out))
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
