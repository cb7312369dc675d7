"""Errors raised by the data pipeline.

Every problem with input data is a :class:`DataError` (a ``ValueError``) whose message names the file,
the line (text files) or row index (parquet), the column, what was found and what was expected, so that a
user can open the file at the right place. Subclasses let callers and tests tell the cases apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "DataError",
    "DelimiterError",
    "EmptyResultError",
    "EmptySourceError",
    "EncodingError",
    "InvalidValueError",
    "MissingColumnError",
    "NotAFileError",
    "OutputWriteError",
    "PreparedDatasetError",
    "RaggedRowError",
    "SourceFormatError",
    "SourceNotFoundError",
    "UnknownIdError",
    "require_columns",
]


class DataError(ValueError):
    """A problem with input data, located as precisely as possible.

    Attributes:
        path: the file concerned, if any.
        line: 1-based physical line in a text file, if known.
        row: 0-based data-row index (the ``row`` column of the prepared data), if known.
        column: the raw column name concerned, if any.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.row = row
        self.column = column
        self.problem = problem
        self.expected = expected
        super().__init__(self._format())

    def _format(self) -> str:
        where: list[str] = []
        if self.path is not None:
            where.append(str(self.path))
        if self.line is not None:
            where.append(f"line {self.line}")
        elif self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        text = f"{', '.join(where)}: {self.problem}" if where else self.problem
        if self.expected:
            text += f"; expected {self.expected}"
        return text


class SourceNotFoundError(DataError):
    """The input file does not exist."""


class NotAFileError(DataError):
    """The input path exists but is not a regular file (a directory, a device, a socket)."""


class EmptySourceError(DataError):
    """The input file is empty or has a header but no data rows."""


class SourceFormatError(DataError):
    """The file format could not be recognised or the configured options do not fit it."""


class MissingColumnError(DataError):
    """A configured column is not in the file; the message lists the available ones."""


def require_columns(
    columns: Sequence[str], needed: Sequence[str], *, path: str | Path | None, expected: str
) -> None:
    """Raise :class:`MissingColumnError` for the first of ``needed`` that is not in ``columns``."""
    for column in needed:
        if column not in columns:
            raise MissingColumnError(
                f"no column {column!r}; the columns are {list(columns)}",
                path=path,
                column=column,
                expected=expected,
            )


class DelimiterError(DataError):
    """The configured or sniffed delimiter does not split the lines into the expected fields."""


class RaggedRowError(DataError):
    """A line has a different number of fields from the header (or the first line)."""


class InvalidValueError(DataError):
    """A value is null, non-numeric or out of range (null ids, bad or negative timestamps, ratings)."""


class EncodingError(DataError):
    """Bytes that are not valid in the declared text encoding."""


class EmptyResultError(DataError):
    """The filters removed every interaction; the message names the filter that removed the last ones."""


class UnknownIdError(DataError):
    """Ids missing from a vocabulary, with ``unknown="error"``."""


class OutputWriteError(DataError):
    """An output could not be written: no space left, a quota, a read-only or unwritable folder.

    Not bad input, but the same kind of user-fixable problem: one line naming the file, exit status 2,
    nothing left behind.
    """


class PreparedDatasetError(DataError):
    """A prepared dataset directory that is missing, incomplete or corrupt."""
