"""Gzip-compressed inputs: decompress with errors that name the file, and check a whole stream.

Python's :mod:`gzip` raises ``EOFError`` for a truncated file and ``BadGzipFile`` / ``zlib.error`` for a
corrupt one, none of which names the file; polars raises ``OSError`` or, when a corrupt block still
inflates, parses garbage and reports a ragged row. Every reader turns those into one located
:class:`~recsys.data.errors.SourceFormatError` ("truncated or corrupt gzip") through this module.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from recsys.data.errors import SourceFormatError

__all__ = ["GZIP_ERRORS", "check_gzip", "gzip_error", "read_gzip"]

GZIP_ERRORS: tuple[type[Exception], ...] = (EOFError, gzip.BadGzipFile, zlib.error)
"""What the standard library raises for a gzip stream that is cut short or damaged."""
_CHUNK = 1 << 20


def gzip_error(path: Path, exc: BaseException, lines: int | None = None) -> SourceFormatError:
    """The located error for a broken gzip stream (``lines``: complete lines decompressed before it).

    The line count is only quoted for a truncated stream: a checksum fails after the last byte, so its
    line count says nothing about where the damage is.
    """
    reason = str(exc).strip() or type(exc).__name__
    where = f", after {lines:,} complete line(s)" if lines is not None and isinstance(exc, EOFError) else ""
    return SourceFormatError(
        f"truncated or corrupt gzip ({reason}{where})",
        path=path,
        expected="a complete gzip file (copy or download it again)",
    )


def read_gzip(path: Path, limit: int | None = None) -> bytes:
    """The decompressed bytes of ``path`` (at most ``limit`` of them); a broken stream is located."""
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read() if limit is None else handle.read(limit)
    except GZIP_ERRORS as exc:
        raise gzip_error(path, exc) from None


def check_gzip(path: Path) -> SourceFormatError | None:
    """Inflate the whole of ``path`` and return the located error if the stream is broken, else None.

    Only called once a read has failed (it costs one more pass over the file): it tells a damaged file
    from bad content, which a parse error alone cannot.
    """
    lines = 0
    try:
        with gzip.open(path, "rb") as handle:
            # read1: whatever one underlying read inflates, so the lines before a truncation are counted.
            while chunk := handle.read1(_CHUNK):
                lines += chunk.count(b"\n")
    except GZIP_ERRORS as exc:
        return gzip_error(path, exc, lines)
    return None
