"""One sequence per line: ``user item1 item2 item3 ...``, items in time order (``sequence_per_line``).

The layout of the S3-Rec / ELECRec Amazon files (``Toys_and_Games.txt``): a user id, then that user's items
oldest first, separated by spaces (any run of whitespace is accepted). There is no time column: the order of
the items is the order, so, as for ``sasrec_txt``, the timestamp is the interaction's position in the file
(line by line, then left to right) and ``implied_order`` is set. ``row`` is the 0-based line index, so every
item of a line shares it and errors name the file's line. Blank lines are skipped (and still counted); a user
listed on two lines has both lines' items, in file order.

Bad input is located like the other formats: a line with a user id and no item, invalid UTF-8 or a broken
gzip stream name the file and the line.
"""

from __future__ import annotations

import polars as pl

from recsys.config import SourceConfig
from recsys.data.columns import ITEM, ROW, TIMESTAMP, USER
from recsys.data.compression import check_gzip, read_gzip
from recsys.data.diagnose import check_encoding
from recsys.data.errors import DataError, DelimiterError, InvalidValueError
from recsys.data.scan import Scan, first_line, mapping, source_info
from recsys.data.sniff import ResolvedFormat, Sample, sniff_delimiter
from recsys.data.text_reader import resolve_encoding, transcode

__all__ = ["EXPECTED_LINE", "collect_sequences", "scan_sequences"]

EXPECTED_LINE = "'user item1 item2 ...': a user id, then at least one item id, space-separated"
_FORMAT: ResolvedFormat = "sequence_per_line"
_LINE = "line"
_TOKENS = "tokens"
# A byte that does not occur in interaction logs, so that polars reads each line as one field.
_NO_SEPARATOR = "\x1f"


def scan_sequences(source: SourceConfig, sample: Sample) -> Scan:
    """A lazy canonical frame over a one-sequence-per-line file (nothing is read yet).

    Ids are strings here; :func:`collect_sequences` validates the lines and types the ids.
    """
    encoding = resolve_encoding(source, _FORMAT)
    text = transcode(source.path, sample.compressed, encoding)
    lines = pl.scan_csv(
        text,
        has_header=False,
        separator=_NO_SEPARATOR,
        quote_char=None,
        new_columns=[_LINE],
        schema={_LINE: pl.String()},
        encoding="utf8",
        raise_if_empty=False,
    )
    tokens = pl.col(_LINE).str.extract_all(r"\S+")
    lazy = (
        lines.with_row_index(ROW)
        .select(ROW, tokens.alias(_TOKENS))
        .filter(pl.col(_TOKENS).list.len() > 0)
        .select(
            pl.col(_TOKENS).list.first().alias(USER),
            # A line with a user and no item explodes to one null item: collect_sequences reports it.
            pl.col(_TOKENS).list.slice(1).alias(ITEM),
            pl.col(ROW),
        )
        .explode(ITEM, empty_as_null=True)
        .select(USER, ITEM, pl.int_range(pl.len(), dtype=pl.Int64).alias(TIMESTAMP), ROW)
    )
    info = source_info(
        source, _FORMAT, sample, (" ", False), mapping(source, _FORMAT), [USER, ITEM], encoding
    )
    return Scan(lazy=lazy, info=info)


def _read_failure(exc: Exception, scan: Scan) -> DataError:
    info = scan.info
    if info.compressed:
        broken = check_gzip(info.path)
        if broken is not None:
            return broken
    data = read_gzip(info.path) if info.compressed else info.path.read_bytes()
    found = check_encoding(info, data, [USER, ITEM])
    if found is not None:
        return found
    return DataError(f"could not be read as {_FORMAT}: {first_line(exc)}", path=info.path)


def _no_items(frame: pl.DataFrame, scan: Scan) -> DataError | None:
    """The first line that holds a user id and no item (one token: maybe another separator)."""
    bad = frame.lazy().filter(pl.col(ITEM).is_null()).select(ROW, USER).head(1).collect()
    if bad.height == 0:
        return None
    info = scan.info
    line, token = int(bad[ROW][0]) + 1, str(bad[USER][0])  # no header: the row is the line index
    guess = sniff_delimiter([token])
    if token.count(guess) > 0:
        return DelimiterError(
            f"one field {token[:80]!r} (it looks {guess!r}-separated)",
            path=info.path,
            line=line,
            expected=EXPECTED_LINE,
        )
    return InvalidValueError(
        f"user {token!r} has no items", path=info.path, line=line, expected=EXPECTED_LINE
    )


def _typed_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """Each id column as Int64 when every id is an integer, else left as strings (like the other readers)."""
    typed = []
    for name in (USER, ITEM):
        numbers = frame[name].cast(pl.Int64, strict=False)
        if numbers.null_count() == 0:
            typed.append(numbers)
    return frame.with_columns(typed) if typed else frame


def collect_sequences(scan: Scan) -> pl.DataFrame:
    """Read the lines into the canonical schema; a user without items is a located error."""
    try:
        frame = scan.lazy.collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _read_failure(exc, scan) from None
    found = _no_items(frame, scan)
    if found is not None:
        raise found
    return _typed_ids(frame)
