"""The `data` section: where the raw log is, how it is read, cleaned and split."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from recsys.config.base import Section as _Section

__all__ = [
    "CleaningConfig",
    "ColumnsConfig",
    "DataConfig",
    "ItemFeaturesConfig",
    "ReaderFormat",
    "ResolvedFormat",
    "SourceConfig",
    "SplitConfig",
]


# ----------------------------------------------------------------------------------------------- data
ResolvedFormat = Literal[
    "csv",
    "tsv",
    "parquet",
    "movielens_dat",
    "movielens_csv",
    "sasrec_txt",
    "sequence_per_line",
    "recbole_inter",
]
"""A file format once sniffed (what the readers dispatch on)."""
ReaderFormat = Literal["auto", ResolvedFormat]


class ColumnsConfig(_Section):
    user: str = Field("user_id", description="Column holding the user id in the raw log.")
    item: str = Field("item_id", description="Column holding the item id in the raw log.")
    timestamp: str | None = Field(
        "timestamp", description="Column holding the event time; null when order is implied by line order."
    )
    rating: str | None = Field(
        None, description="Optional rating column (used by cleaning.rating_threshold)."
    )
    event: str | None = Field(None, description="Optional event-type column (used by cleaning.event_types).")


class SourceConfig(_Section):
    path: Path = Field(Path("data/ml-latest-small/ratings.csv"), description="Interaction log to read.")
    format: ReaderFormat = Field("auto", description="File format; `auto` sniffs it from name and content.")
    has_header: bool | None = Field(None, description="Whether a CSV/TSV has a header line; null sniffs it.")
    delimiter: str | None = Field(None, description="Field delimiter for CSV/TSV; null sniffs it.")
    encoding: str | None = Field(
        None, description="Text encoding; null means utf-8, or latin-1 for MovieLens .dat files."
    )
    columns: ColumnsConfig = Field(default_factory=ColumnsConfig, description="Raw column names.")
    column_names: list[str] | None = Field(
        None,
        description="Field names of a headerless CSV/TSV, in file order; null: column_1, column_2, ...",
    )


class CleaningConfig(_Section):
    null_ids: Literal["error", "drop"] = Field(
        "error", description="Rows with a null user or item: fail with the row number, or drop them."
    )
    rating_threshold: float | None = Field(
        None, description="Keep only rows with rating >= this (implicit feedback); null keeps all."
    )
    event_types: list[str] | None = Field(None, description="Keep only these event types; null keeps all.")
    duplicates: Literal["keep_all", "keep_first", "keep_last"] = Field(
        "keep_all", description="Repeated (user, item) pairs: keep all, the first, or the last occurrence."
    )
    min_user_interactions: int = Field(1, ge=1, description="k-core: minimum interactions per user.")
    min_item_interactions: int = Field(1, ge=1, description="k-core: minimum interactions per item.")


class SplitConfig(_Section):
    kind: Literal["leave_one_out", "temporal"] = Field(
        "leave_one_out",
        description="leave_one_out: last item is test, second-to-last validation; temporal: global cutoffs.",
    )
    test_cutoff: float | None = Field(
        None,
        description="temporal: timestamp at/after which events are test; a value in (0,1) is a quantile.",
    )
    validation_cutoff: float | None = Field(
        None, description="temporal: timestamp at/after which (and before test) events are validation."
    )

    @model_validator(mode="after")
    def _temporal_cutoffs(self) -> SplitConfig:
        if self.kind == "temporal" and self.test_cutoff is None:
            raise ValueError("split.kind=temporal needs split.test_cutoff")
        test, val = self.test_cutoff, self.validation_cutoff
        # Only comparable when both are quantiles or both absolute; mixed pairs are checked once resolved.
        if test is not None and val is not None and ((0 < test < 1) == (0 < val < 1)) and val > test:
            raise ValueError("split.validation_cutoff must not be after split.test_cutoff")
        return self


class ItemFeaturesConfig(_Section):
    path: Path | None = Field(
        None,
        description="Item side features (categories, brand, ...): a JSON object `{item: [feature, ...]}` "
        "(the S3-Rec `item2attributes.json` layout), a CSV/TSV/parquet table of (item, feature) rows, or "
        "MovieLens `movies.dat` (genres); "
        "each item's features are embedded and their mean added to its embedding, where it is read and "
        "where it is scored. null: no features.",
    )
    item_column: str = Field("item_id", description="Item id column of a feature table.")
    feature_column: str = Field("feature", description="Feature column of a feature table.")
    feature_separator: str | None = Field(
        None,
        min_length=1,
        description="Split each value of a table's feature column on this string into several features "
        '(`"|"` for the `genres` column of MovieLens `movies.csv`). A `.dat` file is read as MovieLens '
        "`movies.dat` (`MovieID::Title::Genre|Genre`, latin-1): the genres are its features.",
    )
    id_map: Path | None = Field(
        None,
        description="A CSV/TSV with a header line mapping the log's item ids (first column) to the ids the "
        "feature file uses (second column), for a log whose items were renumbered (ML-1M's "
        "`ml-1m.itemmap.tsv` for `ml-1m.txt` and `movies.dat`). null: the file uses the log's ids.",
    )


class DataConfig(_Section):
    source: SourceConfig = Field(default_factory=SourceConfig, description="Where the raw log is.")
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig, description="Cleaning and filtering.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="How to split into train/val/test.")
    item_features: ItemFeaturesConfig = Field(
        default_factory=ItemFeaturesConfig, description="Optional item side features."
    )
    unknown_ids: Literal["error", "drop"] = Field(
        "error", description="At inference, ids missing from the vocabulary: fail or drop (and count)."
    )
    output_dir: Path = Field(Path("prepared/demo"), description="Prepared dataset directory.")
