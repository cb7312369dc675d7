"""Delimited text sources (csv, tsv, RecBole ``.inter``, MovieLens ``.dat``/``.csv``, ``sasrec_txt``).

Polars does the reading; this module works out how to ask it (separator, header, field names, encoding),
widens a column's type when schema inference guessed from too few rows, and hands every failure to
:mod:`recsys.data.diagnose` to locate.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import polars as pl

from recsys.config import SourceConfig
from recsys.data.columns import EVENT, ITEM, RATING, TIMESTAMP, USER
from recsys.data.compression import check_gzip, read_gzip
from recsys.data.diagnose import SEQUENCE_HINT, diagnose_text_error
from recsys.data.errors import DataError, DelimiterError, EncodingError, SourceFormatError
from recsys.data.scan import Scan, TextPlan, canonical, check_columns, first_line, mapping, source_info
from recsys.data.sniff import ResolvedFormat, Sample, sniff_delimiter, sniff_header, split_fields
from recsys.data.source import SourceInfo

__all__ = ["collect_text", "resolve_encoding", "scan_text", "transcode"]

# Polars names the column it could not parse; we retry ids and timestamps as strings.
_PARSE_ERROR = re.compile(r"could not parse `.*?` as dtype `.*?` at column '(.+?)'")
_MOVIELENS_DAT_NAMES = ["UserID", "MovieID", "Rating", "Timestamp"]


def resolve_encoding(source: SourceConfig, fmt: ResolvedFormat) -> str:
    """Normalised codec name: the configured one, else latin-1 for MovieLens .dat, else utf-8."""
    name = source.encoding or ("latin-1" if fmt == "movielens_dat" else "utf-8")
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise SourceFormatError(
            f"unknown text encoding {name!r}", path=source.path, expected="a Python codec name"
        ) from None


def transcode(path: Path, compressed: bool, encoding: str) -> Path | bytes:
    """What to hand polars: the path when the bytes are already UTF-8, else UTF-8 bytes in memory."""
    if encoding == "utf-8":
        return path
    data = read_gzip(path) if compressed else path.read_bytes()
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
            expected=f"{len(names)} fields ({', '.join(names)})"
            + (SEQUENCE_HINT if fmt == "sasrec_txt" and n_fields > len(names) else ""),
        )
    return names, names


def _read_failure(
    exc: Exception,
    info: SourceInfo,
    source: Path | bytes,
    names: list[str],
    strings: pl.LazyFrame | None = None,
) -> DataError:
    """The located error for a failed polars read: a broken gzip stream first, else the bad content."""
    if info.compressed and isinstance(source, Path):
        broken = check_gzip(source)
        if broken is not None:
            return broken
    if not isinstance(exc, pl.exceptions.PolarsError):  # an OSError of the file itself, not of its content
        return SourceFormatError(f"could not be read ({first_line(exc)})", path=info.path)
    return diagnose_text_error(exc, info, source, names, strings)


def scan_text(source: SourceConfig, fmt: ResolvedFormat, sample: Sample) -> Scan:
    """A lazy canonical frame over a delimited text source (reads the schema only)."""
    encoding = resolve_encoding(source, fmt)
    separator, polars_separator, has_header = _text_layout(source, fmt, sample)
    columns = mapping(source, fmt)
    names: list[str] | None = None
    field_names: list[str] = []
    if not has_header:
        names, field_names = _headerless_names(source, fmt, sample, separator)
    overrides: dict[str, pl.DataType] = {}
    if columns[RATING] is not None:
        overrides[columns[RATING]] = pl.Float64()
    if columns[EVENT] is not None:
        overrides[columns[EVENT]] = pl.String()
    plan = TextPlan(
        source=transcode(source.path, sample.compressed, encoding),
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
    except (pl.exceptions.PolarsError, OSError) as exc:
        info = source_info(source, fmt, sample, layout, columns, [], encoding)
        raise _read_failure(exc, info, plan.source, field_names) from None
    first = next((line for line in sample.lines if line.strip()), "")
    check_columns(source.path, columns, available, separator, has_header, first)
    info = source_info(source, fmt, sample, layout, columns, available, encoding)
    return Scan(lazy=canonical(plan.scan(), info), info=info, text=plan)


def collect_text(scan: Scan, plan: TextPlan) -> pl.DataFrame:
    """Collect a text scan, reading ids / timestamps as strings when schema inference guessed wrong."""
    info = scan.info
    overrides = dict(plan.overrides)
    # Schema inference looks at the first rows only; a later value may need a wider type.
    retryable: dict[str, pl.DataType] = {info.raw(USER): pl.String(), info.raw(ITEM): pl.String()}
    if not info.implied_order:
        # As text: a fractional or an ISO-8601 value after integer ones (recsys.data.timestamps).
        retryable[info.raw(TIMESTAMP)] = pl.String()
    while True:
        try:
            return canonical(plan.scan(overrides), info).collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            match = _PARSE_ERROR.search(str(exc))
            column = match.group(1) if match else None
            if column is not None and column in retryable and column not in overrides:
                overrides[column] = retryable[column]
                continue
            strings = canonical(plan.scan(strings=True), info)
            raise _read_failure(exc, info, plan.source, plan.field_names, strings) from None
