"""Look at the first bytes of an input file: compression, format, delimiter, header.

Sniffing only reads a small sample (the first 64 KiB after decompression), decoded as latin-1 so that
it never fails on bytes that are invalid in the declared encoding; that check belongs to the reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from recsys.config import ResolvedFormat
from recsys.data.compression import read_gzip

__all__ = [
    "GZIP_MAGIC",
    "PARQUET_MAGIC",
    "ResolvedFormat",
    "Sample",
    "looks_numeric",
    "read_sample",
    "sniff_delimiter",
    "sniff_format",
    "sniff_header",
    "split_fields",
]


GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
_SAMPLE_BYTES = 64 * 1024
_SAMPLE_LINES = 50
# Delimiters tried in this order; the first that splits every sampled line into the same number (>1) of
# fields wins, so a comma beats a space inside a quoted title.
_DELIMITERS = (",", "\t", ";", "|", " ")
_RECBOLE_HEADER = re.compile(r"^[^\t:]+:(token|float|token_seq|float_seq)(\t|$)")
_SASREC_LINE = re.compile(r"^\S+ \S+$")
_TOKENS_LINE = re.compile(r"^\S+( \S+)*$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Sample:
    """The first lines of a file (decoded latin-1, line ends removed) and what its bytes look like."""

    lines: list[str]
    compressed: bool
    is_parquet: bool
    empty: bool


def read_sample(path: Path) -> Sample:
    """Read the first 64 KiB of ``path`` (decompressed when gzip) into a :class:`Sample`.

    Raises:
        SourceFormatError: a gzip stream that ends or breaks within those 64 KiB.
    """
    with path.open("rb") as handle:
        head = handle.read(_SAMPLE_BYTES)
    compressed = head.startswith(GZIP_MAGIC)
    if compressed:
        head = read_gzip(path, _SAMPLE_BYTES)
    is_parquet = not compressed and head.startswith(PARQUET_MAGIC)
    text = "" if is_parquet else head.decode("latin-1")
    # The last sampled line may be cut in the middle; keep it only when the sample is the whole file.
    lines = text.splitlines()
    if len(head) == _SAMPLE_BYTES and lines:
        lines = lines[:-1]
    return Sample(
        lines=lines[:_SAMPLE_LINES],
        compressed=compressed,
        is_parquet=is_parquet,
        empty=not head.strip(),
    )


def split_fields(line: str, separator: str) -> list[str]:
    """Split one line into fields (no quoting: good enough for sniffing and diagnostics)."""
    return line.split(separator)


def looks_numeric(value: str) -> bool:
    """Whether a raw field parses as a number."""
    return bool(_NUMBER.match(value.strip()))


def _suffix(path: Path) -> str:
    """The format suffix, ignoring a trailing ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def sniff_format(path: Path, sample: Sample) -> ResolvedFormat:
    """Guess the format from the file name and its first lines (``format: auto``)."""
    suffix = _suffix(path)
    if sample.is_parquet or suffix in (".parquet", ".pq"):
        return "parquet"
    first = next((line for line in sample.lines if line.strip()), "")
    if suffix == ".inter" or _RECBOLE_HEADER.match(first):
        return "recbole_inter"
    if "::" in first:
        return "movielens_dat"
    if first.replace('"', "").startswith("userId,movieId"):
        return "movielens_csv"
    data_lines = [line for line in sample.lines if line.strip()]
    if suffix in (".txt", "") and data_lines and all(_SASREC_LINE.match(line) for line in data_lines):
        return "sasrec_txt"
    if suffix in (".txt", "") and _looks_like_sequences(data_lines):
        return "sequence_per_line"
    if suffix == ".tsv":
        return "tsv"
    if suffix == ".csv":
        return "csv"
    return "tsv" if sniff_delimiter(sample.lines) == "\t" else "csv"


def _looks_like_sequences(lines: list[str]) -> bool:
    """One user per line with a varying number of items: ``user i1 i2 ...``.

    Told apart from ``sasrec_txt`` (exactly two fields on every line, users repeated on consecutive lines)
    and from a space-separated table (the same number of fields on every line) by two signs that hold on
    any real sample of such a file: the field count varies, and no user id repeats. A line holding only a
    user id is allowed, so that the reader can report it as a user without items. A sample whose lines
    all have two fields reads the same either way; one whose lines all have the same longer length is
    taken as a table (set ``format: sequence_per_line`` to read it as sequences).
    """
    stripped = [line.rstrip() for line in lines]
    if not all(_TOKENS_LINE.match(line) for line in stripped):
        return False
    spaces = [line.count(" ") for line in stripped]
    users = [line.split(" ", 1)[0] for line in stripped]
    with_items = sum(count > 0 for count in spaces)
    return with_items >= 2 and len(set(spaces)) > 1 and len(set(users)) == len(users)


def sniff_delimiter(lines: list[str]) -> str:
    """The delimiter that splits every sampled line into the same number (> 1) of fields.

    Falls back to the candidate found most often on the first line, then to a comma (a file that then
    reads as one column gets a clear "wrong delimiter" error from the reader).
    """
    data = [line for line in lines if line.strip()][:20]
    if not data:
        return ","
    for candidate in _DELIMITERS:
        counts = {line.count(candidate) for line in data}
        if len(counts) == 1 and counts.pop() > 0:
            return candidate
    best = max(_DELIMITERS, key=lambda c: data[0].count(c))
    return best if data[0].count(best) > 0 else ","


def sniff_header(lines: list[str], separator: str, names: list[str]) -> bool:
    """Whether the first line is a header.

    A header if it contains one of the configured column names, or if some field is non-numeric on the
    first line but numeric on the second (ids may be strings, but a timestamp or rating column is not).
    """
    data = [line for line in lines if line.strip()]
    if not data:
        return False
    first = [f.strip().strip('"') for f in split_fields(data[0], separator)]
    if any(name in first for name in names):
        return True
    if len(data) < 2:
        return not any(looks_numeric(f) for f in first)
    second = split_fields(data[1], separator)
    return any(not looks_numeric(a) and looks_numeric(b) for a, b in zip(first, second, strict=False))
