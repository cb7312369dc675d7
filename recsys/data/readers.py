"""Readers: every supported log format to one canonical LazyFrame schema.

The canonical schema (names in :mod:`recsys.data.columns`):

========== ================= ===============================================================
column     dtype             meaning
========== ================= ===============================================================
user       Int64 or String   original user id
item       Int64 or String   original item id
timestamp  Int64 or Float64  event time; the row number when order is implied by line order
rating     Float64           only when the source has (or is mapped to) a rating column
event      String            only when ``columns.event`` is set
row        UInt32            0-based data-row index in the file: tie-break and error locator
========== ================= ===============================================================

Formats (``source.format``; ``auto`` sniffs from the name and the first lines, see :mod:`.sniff`):

- ``csv`` / ``tsv``: with or without a header (``has_header``; null sniffs it), any one-character
  delimiter (``delimiter``; null sniffs it). Headerless fields are named by ``source.column_names`` or
  ``column_1``, ``column_2``, ...; ``source.columns`` maps those names to user/item/timestamp/...
- ``parquet``: ``source.columns`` maps its columns; datetime timestamps become unix seconds.
- ``recbole_inter``: tab-separated with a typed header (``user_id:token``); the ``:type`` suffixes are
  dropped and ``source.columns`` maps the names (its defaults match RecBole's).
- ``movielens_dat``: ``UserID::MovieID::Rating::Timestamp`` (ML-1M, ML-10M ``ratings.dat``), latin-1.
- ``movielens_csv``: ml-latest / ML-20M+ ``userId,movieId,rating,timestamp``.
- ``sasrec_txt``: ``user item`` per line, space-separated; order is implied by line order.
- ``sequence_per_line``: ``user i1 i2 i3 ...`` per line, items in time order; order is implied by the
  position in the file (:mod:`.sequence_reader`).

The fixed layouts (``movielens_dat``, ``movielens_csv``, ``sasrec_txt``, ``sequence_per_line``) ignore
``source.columns``.
Every text format may be gzip-compressed (detected from the magic bytes). Polars reads UTF-8 only, so a
file in another declared encoding is transcoded in memory unless it is pure ASCII.

Timestamps are numbers: integer columns become Int64, float columns Int64 when every value is whole (e.g.
RecBole's ``timestamp:float``) and Float64 otherwise, datetimes and ISO-8601 text (``2020-01-02T03:04:05Z``,
see :mod:`.timestamps`) UTC unix seconds. A value that is neither a number nor a date/time is an
:class:`~recsys.data.errors.InvalidValueError` naming the line; null and negative timestamps are rejected by
:func:`recsys.data.clean.validate`. Blank lines are skipped (they still count as lines in messages).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.config import SourceConfig
from recsys.data.errors import EmptySourceError, NotAFileError, SourceFormatError, SourceNotFoundError
from recsys.data.normalise import drop_blank_rows, normalise_ids, numeric_rating, numeric_timestamps
from recsys.data.scan import Scan, canonical, check_columns, first_line, mapping, source_info
from recsys.data.sequence_reader import collect_sequences, scan_sequences
from recsys.data.sniff import ResolvedFormat, Sample, read_sample, sniff_format
from recsys.data.source import SourceInfo
from recsys.data.text_reader import collect_text, scan_text

__all__ = ["Scan", "SourceInfo", "check_is_file", "read_interactions", "scan_interactions"]


def _scan_parquet(source: SourceConfig, sample: Sample) -> Scan:
    lazy = pl.scan_parquet(source.path)
    try:
        available = lazy.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise SourceFormatError(
            f"not a readable parquet file ({first_line(exc)})", path=source.path, expected="a parquet file"
        ) from None
    columns = mapping(source, "parquet")
    check_columns(source.path, columns, available, None, True)
    info = source_info(source, "parquet", sample, (None, True), columns, available)
    return Scan(lazy=canonical(lazy, info), info=info)


def check_is_file(path: Path, what: str = "an interaction log file") -> None:
    """A missing path, a directory and a special file are three different mistakes: say which.

    ``what`` names the file expected there (``"an interaction log file"``, ``"a file of user_ids"``).
    """
    if path.is_file():
        return
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        listing = f" (it holds {', '.join(inside[:5])}{', ...' if len(inside) > 5 else ''})" if inside else ""
        raise NotAFileError(
            f"is a directory, expected a file{listing}", path=path, expected=f"the path of {what} inside it"
        )
    if path.exists():
        raise NotAFileError("is not a regular file", path=path, expected=what)
    raise SourceNotFoundError("file not found", path=path, expected=f"an existing {what.split(' ', 1)[-1]}")


def scan_interactions(source: SourceConfig) -> Scan:
    """Resolve the format and options of ``source`` and return a lazy canonical frame over it.

    Cheap: reads a 64 KiB sample and the schema only. Raises a :class:`~recsys.data.errors.DataError`
    subclass for a missing or empty file, a directory, a gzip stream broken within the sample, an unknown
    format, missing columns or a wrong delimiter.
    """
    path = source.path
    check_is_file(path)
    sample = read_sample(path)
    if sample.empty:
        raise EmptySourceError("file is empty", path=path, expected="a header and/or data rows")
    fmt: ResolvedFormat = sniff_format(path, sample) if source.format == "auto" else source.format
    if fmt == "parquet":
        if sample.compressed:
            raise SourceFormatError("gzip-compressed parquet is not supported", path=path)
        return _scan_parquet(source, sample)
    if sample.is_parquet:
        raise SourceFormatError(f"this is a parquet file, not {fmt}", path=path, expected="format: parquet")
    if fmt == "sequence_per_line":
        return scan_sequences(source, sample)
    return scan_text(source, fmt, sample)


def _collect(scan: Scan) -> pl.DataFrame:
    if scan.info.format == "sequence_per_line":
        return collect_sequences(scan)
    if scan.text is not None:
        return collect_text(scan, scan.text)
    try:
        return scan.lazy.collect()
    except pl.exceptions.PolarsError as exc:
        raise SourceFormatError(f"could not read parquet ({first_line(exc)})", path=scan.info.path) from None


def read_interactions(source: SourceConfig) -> tuple[pl.DataFrame, SourceInfo]:
    """Read ``source`` into the canonical schema (see the module docstring), in file order.

    Null ids and null or negative timestamps are kept for :func:`recsys.data.clean.validate`, which
    rejects or drops them by policy with their line number.

    Raises:
        DataError: a subclass naming the file, line/row and column for every unreadable input.
    """
    scan = scan_interactions(source)
    frame = _collect(scan)
    if scan.info.is_text:
        frame = drop_blank_rows(frame, scan.info)
    if frame.height == 0:
        problem = (
            "has a header but no data rows"
            if scan.info.is_text and scan.info.has_header
            else "has no data rows"
        )
        raise EmptySourceError(problem, path=source.path, expected="at least one interaction")
    frame = normalise_ids(frame)
    frame = numeric_timestamps(frame, scan.info)
    frame = numeric_rating(frame, scan.info)
    return frame, scan.info
