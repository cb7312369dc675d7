"""``sequence_per_line`` (``user i1 i2 ...``): sniffed, read in order, bad lines located."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.config import SourceConfig
from recsys.data.columns import ITEM, ROW, TIMESTAMP, USER
from recsys.data.errors import (
    DataError,
    DelimiterError,
    EncodingError,
    InvalidValueError,
    RaggedRowError,
    SourceFormatError,
)
from recsys.data.pipeline import build
from recsys.data.readers import read_interactions
from tests.data.conftest import WriteFile, data_config


def read(path: Path, **source: Any) -> tuple[pl.DataFrame, str]:
    frame, info = read_interactions(SourceConfig(path=path, **source))
    return frame, info.format


def rows(frame: pl.DataFrame) -> list[tuple[object, ...]]:
    return frame.select(USER, ITEM, TIMESTAMP, ROW).rows()


def test_lines_become_interactions_in_file_order(write_file: WriteFile) -> None:
    path = write_file("Toys.txt", "7 3 1 2\n8 1\n\n9 2 3\n")
    frame, fmt = read(path)
    assert fmt == "sequence_per_line"
    assert frame.schema[USER] == frame.schema[ITEM] == pl.Int64
    # (user, item, order, 0-based line): the blank line 3 is skipped but still counted.
    assert rows(frame) == [(7, 3, 0, 0), (7, 1, 1, 0), (7, 2, 2, 0), (8, 1, 3, 1), (9, 2, 4, 3), (9, 3, 5, 3)]


def test_string_ids_and_loose_whitespace(write_file: WriteFile) -> None:
    path = write_file("seq.txt", "alice  b17\tc3 \r\nbob x\r\n")
    frame, _ = read(path, format="sequence_per_line")
    assert frame.schema[USER] == frame.schema[ITEM] == pl.String
    assert rows(frame) == [("alice", "b17", 0, 0), ("alice", "c3", 1, 0), ("bob", "x", 2, 1)]


def test_integer_users_with_string_items(write_file: WriteFile) -> None:
    frame, _ = read(write_file("seq.txt", "1 a b\n2 c\n"), format="sequence_per_line")
    assert frame.schema[USER] == pl.Int64 and frame.schema[ITEM] == pl.String


def test_gzip_and_latin1_read_like_plain(write_file: WriteFile) -> None:
    text = "José é1 é2\nAna é2\n"
    plain, _ = read(write_file("seq.txt", text), format="sequence_per_line")
    packed, _ = read(write_file("seq.txt.gz", text, gz=True, encoding="latin-1"), encoding="latin-1")
    assert plain.equals(packed)
    assert plain[USER].to_list() == ["José", "José", "Ana"]


def test_two_field_lines_read_the_same_as_sasrec_txt(write_file: WriteFile) -> None:
    path = write_file("pairs.txt", "1 10\n2 20\n3 10\n")
    as_pairs, fmt = read(path)
    as_sequences, _ = read(path, format="sequence_per_line")
    assert fmt == "sasrec_txt" and as_pairs.equals(as_sequences)


def test_leave_one_out_targets_are_each_lines_last_items(write_file: WriteFile) -> None:
    built = build(data_config(write_file("seq.txt", "1 5 6 7 8\n2 8 7 6\n3 6 5 7 9 8\n")))
    frame = built.interactions
    item_ids = built.items.ids.to_list()

    def original(split: int) -> list[int]:
        return [item_ids[i - 1] for i in frame.filter(pl.col("split") == split).sort(USER)[ITEM].to_list()]

    assert original(2) == [8, 6, 8] and original(1) == [7, 7, 9]


@pytest.mark.parametrize(
    ("text", "line", "error", "message"),
    [
        ("1 2 3\n\n4\n", 3, InvalidValueError, "user '4' has no items"),
        ("1 2 3\n4,5,6\n", 2, DelimiterError, "one field '4,5,6' (it looks ','-separated)"),
    ],
)
def test_bad_lines_are_located(
    write_file: WriteFile, text: str, line: int, error: type[Exception], message: str
) -> None:
    path = write_file("seq.txt", text)
    with pytest.raises(error) as caught:
        read(path, format="sequence_per_line")
    assert str(caught.value).startswith(f"{path}, line {line}: {message}")
    assert "expected 'user item1 item2 ...'" in str(caught.value)


def test_invalid_utf8_is_located(write_file: WriteFile) -> None:
    path = write_file("seq.txt", b"1 2 3\n4 \xff 6\n")
    with pytest.raises(EncodingError) as caught:
        read(path, format="sequence_per_line")
    assert (caught.value.path, caught.value.line) == (path, 2)


def test_truncated_gzip_is_located(tmp_path: Path) -> None:
    text = "".join(f"{u} {u + 1} {u + 2} {u + 3}\n" for u in range(30_000))
    packed = gzip.compress(text.encode())
    path = tmp_path / "seq.txt.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(SourceFormatError, match=r"truncated or corrupt gzip"):
        read(path, format="sequence_per_line")


@pytest.mark.parametrize(
    ("text", "line", "error"), [("1 2\n3 4\n5 6 7\n", 3, RaggedRowError), ("1 2 3\n4 5\n", 1, DelimiterError)]
)
def test_sequences_read_as_sasrec_txt_point_at_the_format(
    write_file: WriteFile, text: str, line: int, error: type[DataError]
) -> None:
    path = write_file("seq.txt", text)
    with pytest.raises(error) as caught:
        build(data_config(path, format="sasrec_txt"))
    assert caught.value.line == line
    assert str(caught.value).endswith(
        "(or, for one user per line 'user item1 item2 ...', format: sequence_per_line)"
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sequences=st.lists(
        st.tuples(st.integers(1, 10**6), st.lists(st.integers(1, 10**6), min_size=1, max_size=8)),
        min_size=1,
        max_size=30,
        unique_by=lambda pair: pair[0],
    )
)
def test_round_trip(tmp_path: Path, sequences: list[tuple[int, list[int]]]) -> None:
    path = tmp_path / "seq.txt"
    path.write_text("".join(f"{u} {' '.join(map(str, items))}\n" for u, items in sequences))
    frame, _ = read(path, format="sequence_per_line")
    expected = [(u, i) for u, items in sequences for i in items]
    assert list(zip(frame[USER].to_list(), frame[ITEM].to_list(), strict=True)) == expected
    assert frame[TIMESTAMP].to_list() == list(range(len(expected)))
