"""recsys.inference.files: id lists and histories files, with located errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.data.errors import MissingColumnError, NotAFileError, RaggedRowError, SourceNotFoundError
from recsys.inference.files import read_histories_file, read_id_file


def test_read_id_file_formats(tmp_path: Path) -> None:
    text = tmp_path / "users.txt"
    text.write_text("user_id\nu1\n\n u2 \nu1\n", encoding="utf-8")
    assert read_id_file(text, "user_id").to_list() == ["u1", "u2", "u1"]
    csv = tmp_path / "users.csv"
    csv.write_text("x,user_id\n1,7\n2,8\n", encoding="utf-8")
    assert read_id_file(csv, "user_id").to_list() == ["7", "8"]
    parquet = tmp_path / "items.parquet"
    pl.DataFrame({"item_id": [3, 4]}).write_parquet(parquet)
    assert read_id_file(parquet, "item_id").to_list() == [3, 4]


def test_read_id_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"missing\.txt: file not found"):
        read_id_file(tmp_path / "missing.txt", "user_id")
    csv = tmp_path / "users.csv"
    csv.write_text("uid\n1\n", encoding="utf-8")
    with pytest.raises(MissingColumnError, match=r"users\.csv, column 'user_id': no column 'user_id'"):
        read_id_file(csv, "user_id")


def test_read_histories_file(tmp_path: Path) -> None:
    good = tmp_path / "h.csv"
    good.write_text("user_id,item_id,timestamp\na,1,10\na,2,5\n", encoding="utf-8")
    frame = read_histories_file(good)
    assert frame.columns == ["user_id", "item_id", "timestamp"] and frame.height == 2
    no_time = tmp_path / "h2.csv"
    no_time.write_text("user_id,item_id\na,1\n", encoding="utf-8")
    assert read_histories_file(no_time).columns == ["user_id", "item_id"]
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("user_id,item_id,timestamp\na,1,10\nb,2\nc,3,4\n", encoding="utf-8")
    with pytest.raises(RaggedRowError, match=r"ragged\.csv, line 3"):
        read_histories_file(ragged)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("uid,item_id\na,1\n", encoding="utf-8")
    with pytest.raises(MissingColumnError, match=r"wrong\.csv.*'user_id'"):
        read_histories_file(wrong)


def test_a_directory_is_named_as_one(tmp_path: Path) -> None:
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "part.txt").write_text("1\n", encoding="utf-8")
    with pytest.raises(NotAFileError, match=r"users: is a directory, expected a file \(it holds part\.txt\)"):
        read_id_file(tmp_path / "users", "user_id")
    with pytest.raises(NotAFileError, match="is a directory"):
        read_histories_file(tmp_path / "users")
