"""Item side features (categories, brand, ...): read, checked and indexed over an item vocabulary.

Three layouts (``data.item_features.path``):

- a JSON object ``{"item": [feature, ...], ...}``, the S3-Rec ``item2attributes.json`` layout (features are
  ids, numbers or strings);
- a CSV/TSV/parquet table with one ``(item, feature)`` pair per row, in ``item_column`` and
  ``feature_column`` (a CSV/TSV needs a header line); ``feature_separator`` splits a cell listing several
  (MovieLens ``movies.csv``: ``genres`` split on ``|``);
- MovieLens ``movies.dat`` (``MovieID::Title::Genre|Genre``), whose genres are the features.

``id_map`` translates the file's item ids into the log's where the log was renumbered (ML-1M's
``ml-1m.txt`` with ``ml-1m.itemmap.tsv``).

Items are matched to the dataset's vocabulary by their original id (cast to the vocabulary's type); items
the dataset does not have are ignored, and items without a listed feature simply have none. Features are
strings from here on (``4`` in JSON and ``"4"`` in a table are the same feature). The result is a CSR
index over the vocabulary's rows (PAD, items, MASK), which is what the model's mean pooling reads.

Bad input is located like the interaction log: a JSON syntax error names the line and column, a value
that is not a list names its item, a null or a missing column names the row or the column.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.config import ItemFeaturesConfig
from recsys.data.errors import (
    DataError,
    InvalidValueError,
    NotAFileError,
    SourceFormatError,
    SourceNotFoundError,
    require_columns,
)
from recsys.data.vocab import Vocabulary, dense_codes

__all__ = ["ItemFeatures", "index_item_features", "read_item_features"]

_log = logging.getLogger("recsys.data")

_ITEM, _FEATURE = "item", "feature"
_JSON_EXPECTED = 'a JSON object {"item": [feature, ...]} with ids (numbers or strings) as features'


@dataclass(frozen=True)
class ItemFeatures:
    """Features indexed over an item vocabulary.

    Attributes:
        features: the feature vocabulary (original feature ids as strings, indices from 0).
        offsets: ``int64[V + 1]`` CSR offsets over the ``V = n_items + 2`` vocabulary rows: row ``r``'s
            features are ``index[offsets[r]:offsets[r + 1]]`` (PAD and MASK have none).
        index: ``int64[nnz]`` feature indices, sorted within each row, no repeats.
        items_listed: items the file lists (before matching).
        items_matched: listed items that are in the vocabulary (the rest are ignored).
    """

    features: Vocabulary
    offsets: np.ndarray
    index: np.ndarray
    items_listed: int
    items_matched: int

    @property
    def n_features(self) -> int:
        return len(self.features)

    def summary(self) -> dict[str, int | float]:
        """What was read, for the log and ``derived``."""
        rows = np.diff(self.offsets)
        with_features = int((rows > 0).sum())
        return {
            "features": self.n_features,
            "items_with_features": with_features,
            "items_listed_not_in_data": self.items_listed - self.items_matched,
            "mean_per_item": round(float(rows.sum()) / max(with_features, 1), 2),
        }


def _read_json(path: Path) -> pl.DataFrame:
    try:
        data = json.loads(path.read_bytes())
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 ({exc.reason} at byte {exc.start})", path=path) from None
    except json.JSONDecodeError as exc:
        raise SourceFormatError(
            f"invalid JSON: {exc.msg} (column {exc.colno})",
            path=path,
            line=exc.lineno,
            expected=_JSON_EXPECTED,
        ) from None
    if not isinstance(data, dict):
        raise SourceFormatError(
            f"the top level is a JSON {type(data).__name__}, not an object",
            path=path,
            expected=_JSON_EXPECTED,
        )
    items: list[str] = []
    features: list[str] = []
    for item, listed in data.items():
        if not isinstance(listed, list):
            raise InvalidValueError(
                f"item {item!r} maps to a {type(listed).__name__}, not a list",
                path=path,
                expected=_JSON_EXPECTED,
            )
        for value in listed:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise InvalidValueError(
                    f"item {item!r} has the feature {value!r}", path=path, expected=_JSON_EXPECTED
                )
            items.append(item)
            features.append(str(value))
    return pl.DataFrame({_ITEM: items, _FEATURE: features}, schema={_ITEM: pl.String, _FEATURE: pl.String})


def _read_table(path: Path, cfg: ItemFeaturesConfig) -> pl.DataFrame:
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            frame = pl.read_parquet(path)
        else:
            separator = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
            frame = pl.read_csv(path, separator=separator, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SourceFormatError(
            f"cannot be read as a feature table: {str(exc).splitlines()[0]}",
            path=path,
            expected="a CSV/TSV with a header line, or parquet, with one (item, feature) pair per row",
        ) from None
    require_columns(
        frame.columns,
        [cfg.item_column, cfg.feature_column],
        path=path,
        expected="data.item_features.item_column and feature_column naming the table's columns",
    )
    frame = frame.select(
        pl.col(cfg.item_column).cast(pl.String).alias(_ITEM),
        pl.col(cfg.feature_column).cast(pl.String).alias(_FEATURE),
    )
    for name, column in ((_ITEM, cfg.item_column), (_FEATURE, cfg.feature_column)):
        nulls = frame[name].is_null()
        if nulls.any():
            row = int(nulls.arg_true()[0])
            # A text table names its line (the header is line 1), parquet its 0-based row.
            line = None if parquet else row + 2
            raise InvalidValueError(
                "empty value", path=path, line=line, row=row, column=column, expected="an id"
            )
    return frame


def _read_movielens_dat(path: Path) -> pl.DataFrame:
    """MovieLens ``movies.dat``: ``MovieID::Title::Genre|Genre`` per line (latin-1; titles are skipped)."""
    items: list[str] = []
    features: list[str] = []
    expected = "MovieID::Title::Genre|Genre|... (MovieLens movies.dat)"
    with path.open(encoding="latin-1") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            head, sep, rest = line.partition("::")
            _title, sep2, genres = rest.rpartition("::")
            if not (sep and sep2) or not head.strip():
                raise SourceFormatError(
                    f"{line[:60]!r} is not three '::'-separated fields",
                    path=path,
                    line=number,
                    expected=expected,
                )
            for genre in genres.split("|"):
                if genre.strip():
                    items.append(head.strip())
                    features.append(genre.strip())
    return pl.DataFrame({_ITEM: items, _FEATURE: features}, schema={_ITEM: pl.String, _FEATURE: pl.String})


def _split_features(pairs: pl.DataFrame, separator: str) -> pl.DataFrame:
    """One row per feature: ``"A|B"`` becomes ``A`` and ``B`` (empty pieces are dropped)."""
    return (
        pairs.with_columns(pl.col(_FEATURE).str.split(separator))
        .explode(_FEATURE)
        .with_columns(pl.col(_FEATURE).str.strip_chars())
        .filter(pl.col(_FEATURE).str.len_chars() > 0)
    )


def _map_ids(pairs: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Replace the feature file's item ids by the log's, through ``path`` (log id, file id; a header line)."""
    if not path.is_file():
        raise SourceNotFoundError("item id map not found (data.item_features.id_map)", path=path)
    separator = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    expected = "a CSV/TSV with a header line: the log's item id, then the feature file's item id"
    try:
        table = pl.read_csv(path, separator=separator, infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise SourceFormatError(
            f"cannot be read: {str(exc).splitlines()[0]}", path=path, expected=expected
        ) from None
    if table.width < 2:
        raise SourceFormatError(
            f"has {table.width} column(s) ({table.columns}), expected two", path=path, expected=expected
        )
    log_column, file_column = table.columns[:2]
    table = table.select(pl.col(log_column).alias("log"), pl.col(file_column).alias(_ITEM))
    for name, column in (("log", log_column), (_ITEM, file_column)):
        nulls = table[name].is_null()
        if nulls.any():
            row = int(nulls.arg_true()[0])
            raise InvalidValueError("empty value", path=path, line=row + 2, column=column, expected="an id")
    mapped = pairs.join(table, on=_ITEM, how="inner")
    return mapped.select(pl.col("log").alias(_ITEM), _FEATURE)


def _read_pairs(path: Path, cfg: ItemFeaturesConfig) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".json":
        pairs = _read_json(path)
    elif suffix == ".dat":
        pairs = _read_movielens_dat(path)
    else:
        pairs = _read_table(path, cfg)
        if cfg.feature_separator is not None:
            pairs = _split_features(pairs, cfg.feature_separator)
    return pairs


def read_item_features(cfg: ItemFeaturesConfig, items: Vocabulary) -> ItemFeatures | None:
    """Read ``cfg.path`` and index it over ``items`` (offset 1: PAD is row 0, MASK the last row).

    Returns None when no path is configured. Raises :class:`~recsys.data.errors.DataError` subclasses,
    located, for a missing file or bad content, and when no listed item is in the vocabulary.
    """
    if cfg.path is None:
        return None
    path = Path(cfg.path)
    if not path.exists():
        raise SourceNotFoundError("item feature file not found", path=path)
    if not path.is_file():
        raise NotAFileError("is a directory, expected a file of item features", path=path)
    pairs = _read_pairs(path, cfg)
    listed = pairs[_ITEM].n_unique()
    if cfg.id_map is not None:
        pairs = _map_ids(pairs, Path(cfg.id_map))
    found = index_item_features(pairs, items, listed=listed)
    if found.items_matched == 0 and found.items_listed > 0:
        examples = pairs[_ITEM].unique(maintain_order=True).head(3).to_list()
        raise InvalidValueError(
            f"none of its {found.items_listed:,} items is in the data (e.g. {examples}; the data has "
            f"{items.ids.head(3).to_list()})",
            path=path,
            expected="the item ids of the interaction log",
        )
    _log.info("item features from %s: %s", path, ", ".join(f"{k} {v:,}" for k, v in found.summary().items()))
    return found


def index_item_features(pairs: pl.DataFrame, items: Vocabulary, *, listed: int | None = None) -> ItemFeatures:
    """``pairs`` (``item``, ``feature`` string columns) -> CSR over ``items``' vocabulary rows.

    ``listed``: how many items the file listed, where ``pairs`` lost some on the way (an id map).
    """
    listed = pairs[_ITEM].n_unique() if listed is None else listed
    rows = items.lookup(pairs[_ITEM])
    matched = pl.DataFrame({_ITEM: rows, _FEATURE: pairs[_FEATURE]}).filter(pl.col(_ITEM) >= 0)
    codes, feature_ids = dense_codes(matched[_FEATURE])
    indexed = (
        pl.DataFrame({_ITEM: matched[_ITEM], _FEATURE: codes.astype(np.int64)}).unique().sort(_ITEM, _FEATURE)
    )
    vocab_rows = len(items) + items.offset + 1  # PAD (row 0), the items, MASK
    counts = np.bincount(indexed[_ITEM].to_numpy(), minlength=vocab_rows)
    offsets = np.zeros(vocab_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return ItemFeatures(
        features=Vocabulary(feature_ids, offset=0),
        offsets=offsets,
        index=indexed[_FEATURE].to_numpy().astype(np.int64),
        items_listed=listed,
        items_matched=int(matched[_ITEM].n_unique()),
    )
