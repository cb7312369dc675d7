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

The three fixed layouts (``movielens_dat``, ``movielens_csv``, ``sasrec_txt``) ignore ``source.columns``.
Every text format may be gzip-compressed (detected from the magic bytes). Polars reads UTF-8 only, so a
file in another declared encoding is transcoded in memory unless it is pure ASCII.

Timestamps are numbers: integer columns become Int64, float columns Int64 when every value is whole (e.g.
RecBole's ``timestamp:float``) and Float64 otherwise, datetimes unix seconds. A non-numeric value is an
:class:`~recsys.data.errors.InvalidValueError` naming the line; null and negative timestamps are rejected by
:func:`recsys.data.clean.validate`. Blank lines are skipped (they still count as lines in messages).
"""

from __future__ import annotations

import codecs
import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.config import SourceConfig
from recsys.data.columns import EVENT, ITEM, RATING, ROW, TIMESTAMP, USER
from recsys.data.diagnose import diagnose_text_error
from recsys.data.errors import (
    DelimiterError,
    EmptySourceError,
    EncodingError,
    MissingColumnError,
    SourceFormatError,
    SourceNotFoundError,
)
from recsys.data.normalise import drop_blank_rows, normalise_ids, numeric_rating, numeric_timestamps
from recsys.data.sniff import (
    ResolvedFormat,
    Sample,
    read_sample,
    sniff_delimiter,
    sniff_format,
    sniff_header,
    split_fields,
)
from recsys.data.source import SourceInfo

__all__ = ["Scan", "SourceInfo", "read_interactions", "scan_interactions"]

# Polars names the column it could not parse; we retry ids as strings and integer timestamps as floats.
_PARSE_ERROR = re.compile(r"could not parse `.*?` as dtype `.*?` at column '(.+?)'")
_MOVIELENS_DAT_NAMES = ["UserID", "MovieID", "Rating", "Timestamp"]


def _strip_recbole_types(names: list[str]) -> list[str]:
    """``user_id:token`` -> ``user_id`` (RecBole's typed header)."""
    return [name.split(":", 1)[0] for name in names]


@dataclass(frozen=True)
class _TextPlan:
    """How polars is asked to read a text source.

    Attributes:
        source: the path, or UTF-8 bytes when the file had to be transcoded.
        separator: the one-byte separator given to polars.
        has_header: whether the first line is a header.
        names: names given to the fields of a headerless file.
        field_names: the names users know the fields by (for error messages).
        recbole: strip RecBole ``:type`` suffixes from header names.
        overrides: dtypes forced on some raw columns.
    """

    source: Path | bytes
    separator: str
    has_header: bool
    names: list[str] | None
    field_names: list[str]
    recbole: bool
    overrides: dict[str, pl.DataType] = field(default_factory=dict)

    def scan(self, overrides: dict[str, pl.DataType] | None = None, *, strings: bool = False) -> pl.LazyFrame:
        """A polars scan with these options (every column as a string with ``strings=True``)."""
        forced = self.overrides if overrides is None else overrides
        return pl.scan_csv(
            self.source,
            separator=self.separator,
            has_header=self.has_header,
            new_columns=None if self.has_header else self.names,
            with_column_names=_strip_recbole_types if self.recbole else None,
            schema_overrides=None if strings or not forced else forced,
            infer_schema=not strings,
            encoding="utf8",
            raise_if_empty=False,
        )


@dataclass(frozen=True)
class Scan:
    """A lazy canonical frame over a source, plus what is needed to read it again and locate errors."""

    lazy: pl.LazyFrame
    info: SourceInfo
    text: _TextPlan | None = None


# --------------------------------------------------------------------------------------------- options
def _resolve_encoding(source: SourceConfig, fmt: ResolvedFormat) -> str:
    """Normalised codec name: the configured one, else latin-1 for MovieLens .dat, else utf-8."""
    name = source.encoding or ("latin-1" if fmt == "movielens_dat" else "utf-8")
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise SourceFormatError(
            f"unknown text encoding {name!r}", path=source.path, expected="a Python codec name"
        ) from None


def _mapping(source: SourceConfig, fmt: ResolvedFormat) -> dict[str, str | None]:
    """Canonical column -> raw name (``None``: absent) for a format."""
    if fmt == "movielens_dat":
        return {USER: "UserID", ITEM: "MovieID", RATING: "Rating", TIMESTAMP: "Timestamp", EVENT: None}
    if fmt == "movielens_csv":
        return {USER: "userId", ITEM: "movieId", RATING: "rating", TIMESTAMP: "timestamp", EVENT: None}
    if fmt == "sasrec_txt":
        return {USER: "user", ITEM: "item", RATING: None, TIMESTAMP: None, EVENT: None}
    cols = source.columns
    return {
        USER: cols.user,
        ITEM: cols.item,
        RATING: cols.rating,
        TIMESTAMP: cols.timestamp,
        EVENT: cols.event,
    }


def _check_columns(
    path: Path,
    mapping: dict[str, str | None],
    available: list[str],
    separator: str | None,
    has_header: bool,
    first_line: str = "",
) -> None:
    """Every mapped column must exist; otherwise say which are missing and what there is."""
    wanted = [raw for raw in mapping.values() if raw is not None]
    missing = [raw for raw in wanted if raw not in available]
    if not missing:
        return
    if len(available) == 1 and len(wanted) > 1 and separator is not None:
        line = first_line or available[0]
        guess = sniff_delimiter([line])
        hint = f" (it looks {guess!r}-separated)" if guess != separator else ""
        raise DelimiterError(
            f"a single field {line[:80]!r} when split on {separator!r}{hint}",
            path=path,
            line=1,
            expected=f"{len(wanted)}+ fields ({', '.join(wanted)}); check source.delimiter",
        )
    hint = "" if has_header else " (the file has no header: name its fields with source.column_names)"
    raise MissingColumnError(
        f"column(s) {', '.join(map(repr, missing))} not found; available: {', '.join(map(repr, available))}"
        + hint,
        path=path,
        column=missing[0],
        expected="source.columns to name existing columns",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _info(
    source: SourceConfig,
    fmt: ResolvedFormat,
    sample: Sample,
    layout: tuple[str | None, bool],
    mapping: dict[str, str | None],
    available: list[str],
    encoding: str | None = None,
) -> SourceInfo:
    separator, has_header = layout
    return SourceInfo(
        path=source.path,
        format=fmt,
        compressed=sample.compressed,
        encoding=encoding,
        separator=separator,
        has_header=has_header,
        implied_order=mapping[TIMESTAMP] is None,
        raw_columns={k: v for k, v in mapping.items() if v is not None},
        available=available,
    )


def _canonical(lazy: pl.LazyFrame, info: SourceInfo) -> pl.LazyFrame:
    """Add the row index, then project and rename to the canonical schema."""
    columns = [pl.col(raw).alias(canonical) for canonical, raw in info.raw_columns.items()]
    if info.implied_order:
        columns.append(pl.col(ROW).cast(pl.Int64).alias(TIMESTAMP))
    return lazy.with_row_index(ROW).select(*columns, pl.col(ROW))


# --------------------------------------------------------------------------------------------- text
def _transcode(path: Path, compressed: bool, encoding: str) -> Path | bytes:
    """What to hand polars: the path when the bytes are already UTF-8, else UTF-8 bytes in memory."""
    if encoding == "utf-8":
        return path
    data = path.read_bytes()
    if compressed:
        data = gzip.decompress(data)
    # Pure ASCII reads the same in every ASCII-compatible encoding: skip the decode/encode round trip.
    if data.isascii():
        return data if compressed else path
    try:
        return data.decode(encoding).encode("utf-8")
    except UnicodeDecodeError as exc:
        raise EncodingError(
            f"byte {data[exc.start : exc.start + 1]!r} at offset {exc.start} is not valid {encoding}",
            path=path,
            line=data.count(b"\n", 0, exc.start) + 1,
            expected=f"{encoding} text (or set source.encoding)",
        ) from None


def _text_layout(source: SourceConfig, fmt: ResolvedFormat, sample: Sample) -> tuple[str, str, bool]:
    """(real separator, one-byte separator given to polars, has_header)."""
    if fmt == "movielens_dat":
        # Polars separators are one byte: split on ':' and drop the empty fields between the two colons.
        return "::", ":", False
    if fmt == "movielens_csv":
        return ",", ",", True
    if fmt == "sasrec_txt":
        return " ", " ", False
    default = "\t" if fmt in ("tsv", "recbole_inter") else None
    separator = source.delimiter or default or sniff_delimiter(sample.lines)
    if len(separator) != 1:
        raise SourceFormatError(
            f"delimiter {separator!r} is not one character", path=source.path, expected="e.g. ',' or '\\t'"
        )
    has_header = source.has_header
    if fmt == "recbole_inter" and has_header is None:
        has_header = True
    if has_header is None:
        cols = source.columns
        has_header = sniff_header(sample.lines, separator, [cols.user, cols.item])
    return separator, separator, has_header


def _headerless_names(
    source: SourceConfig, fmt: ResolvedFormat, sample: Sample, separator: str
) -> tuple[list[str], list[str]]:
    """(names given to polars, names users know the fields by) for a headerless file."""
    first = next((line for line in sample.lines if line.strip()), "")
    n_fields = len(split_fields(first, separator))
    if fmt == "movielens_dat":
        if n_fields != len(_MOVIELENS_DAT_NAMES):
            raise DelimiterError(
                f"{n_fields} '::'-separated field(s): {first[:80]!r}",
                path=source.path,
                line=1,
                expected="4 fields UserID::MovieID::Rating::Timestamp",
            )
        # Split on ':' gives UserID, '', MovieID, '', ...: name the empty fields so they can be dropped.
        polars_names = [part for name in _MOVIELENS_DAT_NAMES for part in (name, f"_{name}")][:-1]
        return polars_names, _MOVIELENS_DAT_NAMES
    if fmt == "sasrec_txt":
        names = ["user", "item"]
    else:
        names = source.column_names or [f"column_{k}" for k in range(1, n_fields + 1)]
    if n_fields == 1 and len(names) > 1:
        guess = sniff_delimiter([first])
        raise DelimiterError(
            f"a single field {first[:80]!r} when split on {separator!r}"
            + (f" (it looks {guess!r}-separated)" if guess != separator else ""),
            path=source.path,
            line=1,
            expected=f"{len(names)} fields ({', '.join(names)}); check source.delimiter / format",
        )
    if n_fields != len(names):
        raise DelimiterError(
            f"{n_fields} field(s) when split on {separator!r}: {first[:80]!r}",
            path=source.path,
            line=1,
            expected=f"{len(names)} fields ({', '.join(names)})",
        )
    return names, names


def _scan_text(source: SourceConfig, fmt: ResolvedFormat, sample: Sample) -> Scan:
    encoding = _resolve_encoding(source, fmt)
    separator, polars_separator, has_header = _text_layout(source, fmt, sample)
    mapping = _mapping(source, fmt)
    names: list[str] | None = None
    field_names: list[str] = []
    if not has_header:
        names, field_names = _headerless_names(source, fmt, sample, separator)
    overrides: dict[str, pl.DataType] = {}
    if mapping[RATING] is not None:
        overrides[mapping[RATING]] = pl.Float64()
    if mapping[EVENT] is not None:
        overrides[mapping[EVENT]] = pl.String()
    plan = _TextPlan(
        source=_transcode(source.path, sample.compressed, encoding),
        separator=polars_separator,
        has_header=has_header,
        names=names,
        field_names=field_names,
        recbole=fmt == "recbole_inter",
        overrides=overrides,
    )
    layout = (separator, has_header)
    try:
        # The placeholder fields between MovieLens' two colons are not columns anyone can map.
        placeholders = set(names or []) - set(field_names)
        available = [n for n in plan.scan().collect_schema().names() if n not in placeholders]
    except pl.exceptions.PolarsError as exc:
        info = _info(source, fmt, sample, layout, mapping, [], encoding)
        raise diagnose_text_error(exc, info, plan.source, field_names) from None
    first_line = next((line for line in sample.lines if line.strip()), "")
    _check_columns(source.path, mapping, available, separator, has_header, first_line)
    info = _info(source, fmt, sample, layout, mapping, available, encoding)
    return Scan(lazy=_canonical(plan.scan(), info), info=info, text=plan)


# --------------------------------------------------------------------------------------------- parquet
def _scan_parquet(source: SourceConfig, sample: Sample) -> Scan:
    lazy = pl.scan_parquet(source.path)
    try:
        available = lazy.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise SourceFormatError(
            f"not a readable parquet file ({_first_line(exc)})", path=source.path, expected="a parquet file"
        ) from None
    mapping = _mapping(source, "parquet")
    _check_columns(source.path, mapping, available, None, True)
    info = _info(source, "parquet", sample, (None, True), mapping, available)
    return Scan(lazy=_canonical(lazy, info), info=info)


def scan_interactions(source: SourceConfig) -> Scan:
    """Resolve the format and options of ``source`` and return a lazy canonical frame over it.

    Cheap: reads a 64 KiB sample and the schema only. Raises a :class:`~recsys.data.errors.DataError`
    subclass for a missing or empty file, an unknown format, missing columns or a wrong delimiter.
    """
    path = source.path
    if not path.is_file():
        raise SourceNotFoundError("file not found", path=path, expected="an existing interaction log")
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
    return _scan_text(source, fmt, sample)


# --------------------------------------------------------------------------------------------- collect
def _collect(scan: Scan) -> pl.DataFrame:
    """Collect a scan; retry ids as strings / integer timestamps as floats when inference guessed wrong."""
    info = scan.info
    plan = scan.text
    if plan is None:
        try:
            return scan.lazy.collect()
        except pl.exceptions.PolarsError as exc:
            raise SourceFormatError(f"could not read parquet ({_first_line(exc)})", path=info.path) from None
    overrides = dict(plan.overrides)
    # Schema inference looks at the first rows only; a later value may need a wider type.
    retryable: dict[str, pl.DataType] = {info.raw(USER): pl.String(), info.raw(ITEM): pl.String()}
    if not info.implied_order:
        retryable[info.raw(TIMESTAMP)] = pl.Float64()
    while True:
        try:
            return _canonical(plan.scan(overrides), info).collect()
        except pl.exceptions.PolarsError as exc:
            match = _PARSE_ERROR.search(str(exc))
            column = match.group(1) if match else None
            if column is not None and column in retryable and column not in overrides:
                overrides[column] = retryable[column]
                continue
            strings = _canonical(plan.scan(strings=True), info)
            raise diagnose_text_error(exc, info, plan.source, plan.field_names, strings) from None


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
