"""Sniffing formats, delimiters and headers from the name and the first lines."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recsys.data.sniff import read_sample, sniff_delimiter, sniff_format, sniff_header
from tests.data.conftest import WriteFile


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("ratings.dat", "1::1193::5::978300760\n", "movielens_dat"),
        ("data", "1::1193::5::978300760\n", "movielens_dat"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n", "movielens_csv"),
        ("ml.inter", "user_id:token\titem_id:token\n1\t2\n", "recbole_inter"),
        ("noext", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n", "recbole_inter"),
        ("ml-1m.txt", "1 1\n1 2\n2 3\n", "sasrec_txt"),
        ("log.txt", "1 1 100\n1 2 200\n", "csv"),
        ("Toys_and_Games.txt", "1 1 2 3 4 5\n2 4 5 6 7 8\n3 9 10\n", "sequence_per_line"),
        ("seqs", "u1 a b\nu2 c\nu3 d e f\n", "sequence_per_line"),
        ("seqs.txt", "u1 a b\nu2 c d e\nu3\n", "sequence_per_line"),  # u3 has no items: the reader says so
        ("users.txt", "u1\nu2\nu3\n", "csv"),
        # The same number of fields on every line is a space-separated table, not sequences.
        ("log.txt", "1 1 100\n2 2 200\n", "csv"),
        # A repeated user means one event per line (ragged), not one user per line.
        ("log.txt", "1 1 2\n1 3\n2 4 5 6\n", "csv"),
        ("log.tsv", "a\tb\n1\t2\n", "tsv"),
        ("events", "a\tb\tc\n1\t2\t3\n", "tsv"),
        ("events.csv", "a;b\n1;2\n", "csv"),
    ],
)
def test_format(write_file: WriteFile, name: str, text: str, expected: str) -> None:
    path = write_file(name, text)
    assert sniff_format(path, read_sample(path)) == expected
    packed = write_file(name + ".gz", text, gz=True)
    assert sniff_format(packed, read_sample(packed)) == expected


def test_parquet_by_magic(tmp_path: Path) -> None:
    path = tmp_path / "log.bin"
    pl.DataFrame({"a": [1]}).write_parquet(path)
    sample = read_sample(path)
    assert sample.is_parquet and sniff_format(path, sample) == "parquet"


def test_delimiter() -> None:
    assert sniff_delimiter(["a,b,c", "1,2,3"]) == ","
    assert sniff_delimiter(["a\tb", "1\t2"]) == "\t"
    assert sniff_delimiter(["a;b", "1;2"]) == ";"
    assert sniff_delimiter(['"x, y"|2', "z|3"]) == "|"
    assert sniff_delimiter(["ab"]) == ","


def test_header() -> None:
    assert sniff_header(["user_id,item_id", "1,2"], ",", ["user_id", "item_id"])
    assert sniff_header(["u,i,t", "a,b,100"], ",", ["user_id"])
    assert not sniff_header(["1,2,100", "3,4,200"], ",", ["user_id"])
    assert not sniff_header(["alice,book,100", "bob,pen,200"], ",", ["user_id"])
