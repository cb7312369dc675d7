"""Item side features: the two layouts, matching to the item vocabulary, and located errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.config import ItemFeaturesConfig
from recsys.data.errors import (
    InvalidValueError,
    MissingColumnError,
    NotAFileError,
    SourceFormatError,
    SourceNotFoundError,
)
from recsys.data.item_features import read_item_features
from recsys.data.vocab import Vocabulary

ITEMS = Vocabulary(pl.Series([10, 20, 30]), offset=1)  # rows: PAD 0, items 1..3, MASK 4


def _rows(found, row: int) -> list[str]:  # type: ignore[no-untyped-def]
    lo, hi = found.offsets[row], found.offsets[row + 1]
    return [found.features.ids[int(i)] for i in found.index[lo:hi]]


def test_json_layout_is_indexed_over_the_vocabulary_rows(tmp_path: Path) -> None:
    path = tmp_path / "item2attributes.json"
    # 99 is not in the data; 20 lists a feature twice; 30 has none; features are numbers or strings.
    path.write_text(json.dumps({"10": [1, 2], "20": [2, "brand-x", 2], "99": [7]}), encoding="utf-8")
    found = read_item_features(ItemFeaturesConfig(path=path), ITEMS)
    assert found is not None
    assert found.offsets.shape == (len(ITEMS) + 3,)  # PAD, three items, MASK, and the end
    assert _rows(found, 0) == [] and _rows(found, 4) == []  # PAD and MASK
    assert _rows(found, 1) == ["1", "2"]
    assert _rows(found, 2) == ["2", "brand-x"]
    assert _rows(found, 3) == []
    assert found.features.ids.to_list() == ["1", "2", "brand-x"]  # 7 belonged only to an unknown item
    assert found.summary() == {
        "features": 3,
        "items_with_features": 2,
        "items_listed_not_in_data": 1,
        "mean_per_item": 2.0,
    }


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_layout_gives_the_same_index(tmp_path: Path, suffix: str) -> None:
    frame = pl.DataFrame({"sku": [10, 10, 20, 20], "category": ["1", "2", "2", "brand-x"]})
    path = tmp_path / f"features{suffix}"
    if suffix == ".parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path, separator="\t" if suffix == ".tsv" else ",")
    cfg = ItemFeaturesConfig(path=path, item_column="sku", feature_column="category")
    found = read_item_features(cfg, ITEMS)
    assert found is not None
    assert [_rows(found, r) for r in range(5)] == [[], ["1", "2"], ["2", "brand-x"], [], []]
    np.testing.assert_array_equal(found.offsets, [0, 0, 2, 4, 4, 4])


def test_no_path_means_no_features() -> None:
    assert read_item_features(ItemFeaturesConfig(), ITEMS) is None


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ('{"10": [1, 2],\n "20": [3,, 4]}', SourceFormatError, r"features\.json, line 2: invalid JSON"),
        ("[1, 2]", SourceFormatError, "top level is a JSON list, not an object"),
        ('{"10": 5}', InvalidValueError, "item '10' maps to a int, not a list"),
        ('{"10": [[1]]}', InvalidValueError, r"item '10' has the feature \[1\]"),
        ('{"10": [true]}', InvalidValueError, "item '10' has the feature True"),
        ('{"77": [1]}', InvalidValueError, r"none of its 1 items is in the data \(e\.g\. \['77'\]"),
    ],
)
def test_bad_json_is_located(tmp_path: Path, text: str, error: type, message: str) -> None:
    path = tmp_path / "features.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(error, match=message):
        read_item_features(ItemFeaturesConfig(path=path), ITEMS)


def test_bad_tables_are_located(tmp_path: Path) -> None:
    path = tmp_path / "features.csv"
    path.write_text("item_id,tag\n10,a\n", encoding="utf-8")
    with pytest.raises(MissingColumnError, match=r"features\.csv, column 'feature': no column 'feature'"):
        read_item_features(ItemFeaturesConfig(path=path), ITEMS)
    path.write_text("item_id,feature\n10,a\n20,\n", encoding="utf-8")
    with pytest.raises(InvalidValueError, match=r"features\.csv, line 3, column 'feature': empty value"):
        read_item_features(ItemFeaturesConfig(path=path), ITEMS)
    with pytest.raises(SourceNotFoundError, match="item feature file not found"):
        read_item_features(ItemFeaturesConfig(path=tmp_path / "missing.json"), ITEMS)
    with pytest.raises(NotAFileError, match="is a directory"):
        read_item_features(ItemFeaturesConfig(path=tmp_path), ITEMS)


def test_movielens_dat_through_an_id_map(tmp_path: Path) -> None:
    # The log renumbered MovieLens ids 1, 2, 5 as 10, 20, 30 (ML-1M's ml-1m.txt and ml-1m.itemmap.tsv).
    movies = tmp_path / "movies.dat"
    movies.write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "2::Jumanji: The Game (1995)::Adventure\n"
        "5::Caf\xe9 (1995)::Comedy\n"
        "9::Not In The Log (1999)::Drama\n".encode("latin-1")
    )
    id_map = tmp_path / "itemmap.tsv"
    id_map.write_text("new_item_id\tMovieID\n10\t1\n20\t2\n30\t5\n", encoding="utf-8")
    found = read_item_features(ItemFeaturesConfig(path=movies, id_map=id_map), ITEMS)
    assert found is not None
    assert [_rows(found, r) for r in range(1, 4)] == [
        ["Animation", "Children's", "Comedy"],
        ["Adventure"],  # a '::' inside the title does not split it
        ["Comedy"],
    ]
    assert found.summary()["items_listed_not_in_data"] == 1  # movie 9 is not mapped
    assert found.features.ids.to_list() == ["Adventure", "Animation", "Children's", "Comedy"]


def test_a_table_cell_listing_several_features_is_split(tmp_path: Path) -> None:
    path = tmp_path / "movies.csv"
    path.write_text('movieId,title,genres\n10,"A, The (1990)",Drama|Comedy\n20,B (1991),Comedy|\n', "utf-8")
    cfg = ItemFeaturesConfig(path=path, item_column="movieId", feature_column="genres", feature_separator="|")
    found = read_item_features(cfg, ITEMS)
    assert found is not None
    assert [_rows(found, r) for r in range(1, 4)] == [["Comedy", "Drama"], ["Comedy"], []]


@pytest.mark.parametrize(
    ("movies", "id_map", "error", "message"),
    [
        (
            "10::A (1990)::Drama\n20|B (1991)|Comedy\n",
            None,
            SourceFormatError,
            r"movies\.dat, line 2: '20\|B ",
        ),
        ("10::A::Drama\n", "", SourceNotFoundError, r"itemmap\.csv: item id map not found"),
        ("10::A::Drama\n", "new_item_id\n10\n", SourceFormatError, r"itemmap\.csv: has 1 column\(s\)"),
        (
            "10::A::Drama\n",
            "new_item_id,MovieID\n10,10\n20,\n",
            InvalidValueError,
            r"itemmap\.csv, line 3, column 'MovieID': empty value",
        ),
    ],
)
def test_bad_movielens_files_and_id_maps_are_located(
    tmp_path: Path, movies: str, id_map: str | None, error: type, message: str
) -> None:
    path = tmp_path / "movies.dat"
    path.write_text(movies, encoding="latin-1")
    map_path = None if id_map is None else tmp_path / "itemmap.csv"
    if id_map:  # "" names a map that is not there
        (tmp_path / "itemmap.csv").write_text(id_map, encoding="utf-8")
    with pytest.raises(error, match=message):
        read_item_features(ItemFeaturesConfig(path=path, id_map=map_path), ITEMS)
