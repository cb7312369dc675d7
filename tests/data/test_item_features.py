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
