"""Locate why a text file could not be parsed (the slow path, run only after polars has failed).

Polars reports parse failures with a byte offset at best; users need a line, a column and what was
expected. This module re-reads the file in simple, vectorised passes (encoding, fields per line, values
per column) and turns the first problem found into a :class:`~recsys.data.errors.DataError` subclass.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from recsys.data.columns import RATING, ROW, TIMESTAMP
from recsys.data.compression import read_gzip
from recsys.data.errors import DataError, DelimiterError, EncodingError, InvalidValueError, RaggedRowError
from recsys.data.sniff import sniff_delimiter
from recsys.data.timestamps import invalid_timestamp

if TYPE_CHECKING:
    from recsys.data.source import SourceInfo

__all__ = [
    "SEQUENCE_HINT",
    "check_encoding",
    "diagnose_text_error",
    "first_ragged_line",
    "locate_first_invalid",
]

SEQUENCE_HINT = " (or, for one user per line 'user item1 item2 ...', format: sequence_per_line)"
"""Appended to a ``sasrec_txt`` layout error when a line has more than two fields."""
_LINE = "line"
# A byte that does not occur in interaction logs, so that each line reads as one field.
_NO_SEPARATOR = "\x1f"


def locate_first_invalid(frame: pl.DataFrame, column: str, dtype: pl.DataType) -> tuple[int, str] | None:
    """(row, value) of the first non-null string in ``column`` that does not cast to ``dtype``."""
    value = pl.col(column)
    bad = (
        frame.lazy()
        .select(ROW, value)
        .filter(value.is_not_null())
        .filter(value.str.strip_chars().cast(dtype, strict=False).is_null())
        .head(1)
        .collect()
    )
    if bad.height == 0:
        return None
    return int(bad[ROW][0]), str(bad[column][0])


def _raw_bytes(info: SourceInfo, source: Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    return read_gzip(source) if info.compressed else source.read_bytes()


def _field_names(info: SourceInfo, names: list[str], first_line: str) -> list[str]:
    if names:
        return names
    return [f.strip() for f in first_line.split(info.separator or ",")]


def check_encoding(info: SourceInfo, data: bytes, names: list[str]) -> DataError | None:
    """Only UTF-8 is checked here: other encodings were decoded (and checked) before polars saw them."""
    if info.encoding != "utf-8":
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        separator = (info.separator or ",").encode()
        field_index = data[start : exc.start].count(separator)
        first = data[: data.find(b"\n")].decode("latin-1")
        fields = _field_names(info, names, first)
        column = fields[field_index] if field_index < len(fields) else None
        return EncodingError(
            f"byte {data[exc.start : exc.start + 1]!r} is not valid utf-8",
            path=info.path,
            line=line,
            column=column,
            expected="utf-8 text (or set source.encoding, e.g. latin-1)",
        )
    return None


def _check_fields(info: SourceInfo, data: bytes, names: list[str]) -> DataError | None:
    """The first line whose number of fields differs from the header's (or the layout's)."""
    separator = info.separator or ","
    lines = pl.read_csv(
        data,
        has_header=False,
        separator=_NO_SEPARATOR,
        quote_char=None,
        infer_schema=False,
        new_columns=[_LINE],
        truncate_ragged_lines=True,
        raise_if_empty=False,
    )
    counts = (
        lines.lazy()
        .with_row_index(ROW)
        .filter(pl.col(_LINE).str.strip_chars().str.len_bytes() > 0)
        .with_columns((pl.col(_LINE).str.count_matches(separator, literal=True) + 1).alias("fields"))
        .collect()
    )
    if counts.height == 0:
        return None
    expected = len(names) if names else int(counts["fields"][0])
    wrong = counts.filter(pl.col("fields") != expected).head(1)
    if wrong.height == 0:
        return None
    row = int(wrong[ROW][0])
    found = int(wrong["fields"][0])
    text = str(wrong[_LINE][0]).rstrip("\r")
    if found == 1 and expected > 1:
        guess = sniff_delimiter([text])
        return DelimiterError(
            f"a single field when split on {separator!r}: {text[:80]!r}"
            + (f" (it looks {guess!r}-separated)" if guess != separator else ""),
            path=info.path,
            line=row + 1,
            expected=f"{expected} fields; check source.delimiter",
        )
    return RaggedRowError(
        f"ragged row: {found} field(s) when split on {separator!r}: {text[:80]!r}",
        path=info.path,
        line=row + 1,
        expected=f"{expected} fields like the {'header' if info.has_header else 'first line'}"
        + (SEQUENCE_HINT if info.format == "sasrec_txt" and found > expected else ""),
    )


def _check_values(info: SourceInfo, string_scan: pl.LazyFrame) -> DataError | None:
    """The first timestamp that is not a time, or the first rating that is not a number."""
    frame = string_scan.collect()
    if TIMESTAMP in frame.columns and not info.implied_order:
        found = invalid_timestamp(frame, info)
        if found is not None:
            return found
    if RATING in frame.columns:
        bad = locate_first_invalid(frame, RATING, pl.Float64())
        if bad is not None:
            row, value = bad
            return InvalidValueError(
                f"{value!r} is not a number",
                path=info.path,
                column=info.raw(RATING),
                expected="a number",
                **info.locate(row),
            )
    return None


def first_ragged_line(info: SourceInfo) -> DataError | None:
    """The first line of a text source whose field count differs from the first line's, if any."""
    data = _raw_bytes(info, info.path)
    if info.encoding not in (None, "utf-8") and not data.isascii():
        data = data.decode(info.encoding, errors="replace").encode("utf-8")
    return _check_fields(info, data, [])


def diagnose_text_error(
    exc: Exception,
    info: SourceInfo,
    source: Path | bytes,
    names: list[str],
    string_scan: pl.LazyFrame | None = None,
) -> DataError:
    """Turn a polars failure on a text source into the most precise :class:`DataError` we can find.

    Checks, in order: bytes valid in the encoding, the same number of fields on every line, timestamps
    (numbers or ISO-8601) and numeric ratings. Falls back to a generic error quoting polars' first message
    line.
    """
    data = _raw_bytes(info, source)
    found = check_encoding(info, data, names)
    if found is None:
        found = _check_fields(info, data, names)
    if found is None and string_scan is not None:
        try:
            found = _check_values(info, string_scan)
        except pl.exceptions.PolarsError:
            found = None
    if found is not None:
        return found
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(f"could not be parsed as {info.format}: {message}", path=info.path)
