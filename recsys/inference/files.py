"""Request files: lists of user or item ids, and new users' histories, with errors that name the file,
line and column (:mod:`recsys.data.errors`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl

from recsys.config import ColumnsConfig, SourceConfig
from recsys.data.clean import validate
from recsys.data.columns import ITEM, ROW, TIMESTAMP, USER
from recsys.data.errors import EmptySourceError, InvalidValueError, MissingColumnError, require_columns
from recsys.data.readers import SourceInfo, check_is_file, read_interactions
from recsys.inference.ids import ITEM_ID, TIMESTAMP_ID, USER_ID

__all__ = ["Locator", "read_histories_file", "read_histories_located", "read_id_file"]

Locator = Callable[[int], dict[str, int]]
"""Row of a frame read from a file -> the ``line=`` (text) or ``row=`` (parquet) keyword of a DataError."""


def _read_table(file: Path, column: str) -> pl.Series:
    suffix = file.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pl.read_parquet(file)
        else:
            frame = pl.read_csv(file, separator="\t" if suffix == ".tsv" else ",", infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise InvalidValueError(f"cannot read ({str(exc).splitlines()[0]})", path=file) from None
    require_columns(frame.columns, [column], path=file, expected=f"a {column!r} column")
    ids = frame[column]
    if ids.null_count():
        row = int(ids.is_null().arg_true()[0])
        raise InvalidValueError(f"{column} is empty", path=file, row=row, column=column)
    return ids.rename(column)


def read_id_file(path: str | Path, column: str, *, allow_empty: bool = False) -> pl.Series:
    """Ids from a file: parquet or CSV with a ``column`` column, or text with one id per line.

    The format follows the extension (``.parquet``/``.pq``, ``.csv``/``.tsv``; anything else is text). In a
    text file blank lines are skipped and a first line equal to ``column`` is taken as a header. Ids are
    strings from text files; encoding casts them to the vocabulary's type. A file with no id at all is an
    :class:`EmptySourceError` unless ``allow_empty`` (an empty deny list denies nothing; an empty users or
    allow list is a mistake upstream, never a silently empty output).
    """
    file = Path(path)
    check_is_file(file, f"a file of {column}s")
    ids = _read_ids(file, column)
    if not len(ids) and not allow_empty:
        raise EmptySourceError(
            f"holds no {column} (the file is empty or has only a header)",
            path=file,
            expected=f"at least one {column}",
        )
    return ids


def _read_ids(file: Path, column: str) -> pl.Series:
    if file.stat().st_size == 0:
        return pl.Series(column, [], dtype=pl.String)
    if file.suffix.lower() in (".parquet", ".pq", ".csv", ".tsv"):
        return _read_table(file, column)
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidValueError(f"cannot read as UTF-8 text ({exc})", path=file) from None
    values = [line.strip() for line in lines]
    if values and values[0] == column:
        values = values[1:]
    return pl.Series(column, [v for v in values if v], dtype=pl.String)


def _read_interactions(file: Path, timestamp: str | None) -> tuple[pl.DataFrame, SourceInfo]:
    source = SourceConfig(path=file, columns=ColumnsConfig(user=USER_ID, item=ITEM_ID, timestamp=timestamp))
    try:
        frame, info = read_interactions(source)
    except MissingColumnError as exc:
        if exc.column == TIMESTAMP_ID:
            raise
        # The reader's advice is about config keys; here the file itself must have the columns.
        raise MissingColumnError(
            exc.problem,
            path=file,
            column=exc.column,
            expected=f"columns {USER_ID}, {ITEM_ID}[, {TIMESTAMP_ID}]",
        ) from None
    return validate(frame, info, "error")[0], info


def read_histories_file(path: str | Path) -> pl.DataFrame:
    """A histories file (parquet or CSV/TSV with ``user_id, item_id[, timestamp]``) as a polars frame.

    Read by the data pipeline's reader, so a ragged line, an empty id, a non-numeric timestamp or a missing
    column is reported with its file, line and column. Without a timestamp column, file order is the order.
    """
    return read_histories_located(path)[0]


def read_histories_located(path: str | Path) -> tuple[pl.DataFrame, Locator]:
    """:func:`read_histories_file` and where each of its rows is in the file: the physical line of a text
    file (the header is line 1, blank lines count, as ``recsys prepare`` counts them) or the row of a
    parquet file, for the errors of :func:`recsys.inference.ids.histories_from_frame`."""
    file = Path(path)
    check_is_file(file, "a histories file")
    try:
        frame, info = _read_interactions(file, TIMESTAMP_ID)
    except MissingColumnError as exc:
        if exc.column != TIMESTAMP_ID:
            raise
        frame, info = _read_interactions(file, None)
    renamed = {USER: USER_ID, ITEM: ITEM_ID, **({} if info.implied_order else {TIMESTAMP: TIMESTAMP_ID})}
    rows = frame[ROW].to_numpy()

    def locate(row: int) -> dict[str, int]:
        return info.locate(int(rows[row]))

    return frame.select(list(renamed)).rename(renamed), locate
