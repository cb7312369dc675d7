"""Vocabulary: encode/decode, unknown-id policy, persistence; dense_codes on both paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.errors import PreparedDatasetError, UnknownIdError
from recsys.data.vocab import Vocabulary, dense_codes


def test_encode_decode_items_start_at_one() -> None:
    vocab = Vocabulary(pl.Series([10, 20, 30]), offset=1)
    indices, unknown = vocab.encode([30, 10, 20, 10])
    assert indices.tolist() == [3, 1, 2, 1] and unknown == 0
    assert vocab.decode(indices).tolist() == [30, 10, 20, 10]
    assert len(vocab) == 3


def test_unknown_ids_error_names_them() -> None:
    vocab = Vocabulary(pl.Series([10, 20, 30]))
    with pytest.raises(UnknownIdError, match=r"2 id\(s\) not in the vocabulary, e.g. \[15, 99\]"):
        vocab.encode([10, 15, 99])


def test_unknown_ids_dropped_and_counted() -> None:
    vocab = Vocabulary(pl.Series(["a", "c"]), offset=1)
    indices, unknown = vocab.encode(["c", "b", None, "a", "zz"], unknown="drop")
    assert indices.tolist() == [2, 1] and unknown == 3


def test_values_that_do_not_cast_are_unknown() -> None:
    vocab = Vocabulary(pl.Series([1, 2]))
    indices, unknown = vocab.encode(pl.Series(["2", "x"]), unknown="drop")
    assert indices.tolist() == [1] and unknown == 1


def test_decode_out_of_range() -> None:
    with pytest.raises(UnknownIdError, match="out of range"):
        Vocabulary(pl.Series([5, 6]), offset=1).decode([0])


def test_must_be_sorted_and_unique() -> None:
    with pytest.raises(ValueError, match="sorted"):
        Vocabulary(pl.Series([2, 1]))


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary(pl.Series(["x", "y", "z"]), offset=1)
    vocab.save(tmp_path / "items.parquet")
    loaded = Vocabulary.load(tmp_path / "items.parquet")
    assert loaded == vocab and loaded.offset == 1


def test_load_rejects_corrupt_files(tmp_path: Path) -> None:
    (tmp_path / "v.parquet").write_bytes(b"garbage")
    with pytest.raises(PreparedDatasetError):
        Vocabulary.load(tmp_path / "v.parquet")
    pl.DataFrame({"index": [0, 2], "id": [1, 2]}).write_parquet(tmp_path / "gap.parquet")
    with pytest.raises(PreparedDatasetError, match="contiguous"):
        Vocabulary.load(tmp_path / "gap.parquet")


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.integers(-5, 50), st.integers(-(2**40), 2**40)),
        min_size=1,
        max_size=60,
    )
)
def test_dense_codes_sorted_order(values: list[int]) -> None:
    # Small ranges take the lookup-table path, huge ones the join path: both must agree with sorting.
    codes, uniques = dense_codes(pl.Series(values, dtype=pl.Int64))
    expected = sorted(set(values))
    assert uniques.to_list() == expected
    assert [expected[c] for c in codes.tolist()] == values


def test_dense_codes_strings() -> None:
    codes, uniques = dense_codes(pl.Series(["b", "a", "b", "c"]))
    assert uniques.to_list() == ["a", "b", "c"] and codes.tolist() == [1, 0, 1, 2]


def test_encode_many_is_vectorised() -> None:
    vocab = Vocabulary(pl.Series(np.arange(0, 2_000_000, 2)))
    indices, unknown = vocab.encode(np.arange(0, 2_000_000, 1), unknown="drop")
    assert unknown == 1_000_000 and indices[:3].tolist() == [0, 1, 2]
