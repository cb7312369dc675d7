"""Gzip inputs that are cut short or damaged: one located error naming the file, whichever reader hits it."""

from __future__ import annotations

import gzip
import random
import zlib
from pathlib import Path

import pytest

from recsys.data.compression import check_gzip
from recsys.data.errors import SourceFormatError
from recsys.data.pipeline import build
from tests.data.conftest import data_config

HEADER = "user_id,item_id,timestamp\n"


def log_text(rows: int) -> str:
    rng = random.Random(rows)
    return HEADER + "".join(f"{rng.randint(1, 500)},{rng.randint(1, 900)},{1_000 + k}\n" for k in range(rows))


def broken_gzip(path: Path, rows: int, damage: str) -> Path:
    """A real gzip file of ``rows`` log rows, then truncated or with one byte flipped."""
    packed = bytearray(gzip.compress(log_text(rows).encode()))
    if damage == "truncated":
        packed = packed[: len(packed) // 2]
    elif damage == "tail":
        packed = packed[:-6]  # the CRC and length trailer, cut short
    else:
        packed[len(packed) // 2] ^= 0xFF
    path.write_bytes(bytes(packed))
    return path


@pytest.mark.parametrize(
    ("rows", "damage"),
    [
        (3, "tail"),  # broken inside the 64 KiB sniffing sample
        (30_000, "truncated"),  # the sample reads; polars hits the end of the stream
        (30_000, "tail"),  # every row inflates, only the trailer is missing
        (30_000, "corrupt"),  # a flipped byte: a bad block, or garbage that fails the checksum
    ],
)
@pytest.mark.parametrize("encoding", [None, "latin-1"])
def test_broken_gzip_is_located(tmp_path: Path, rows: int, damage: str, encoding: str | None) -> None:
    path = broken_gzip(tmp_path / "log.csv.gz", rows, damage)
    with pytest.raises(SourceFormatError) as caught:
        build(data_config(path, encoding=encoding))
    message = str(caught.value)
    assert message.startswith(f"{path}: truncated or corrupt gzip"), message
    assert "expected a complete gzip file" in message


def test_truncation_reports_how_far_the_stream_got(tmp_path: Path) -> None:
    path = broken_gzip(tmp_path / "log.csv.gz", 30_000, "truncated")
    found = check_gzip(path)
    assert found is not None
    # zlib inflates everything the truncated bytes hold, with no gzip framing checks.
    lines = zlib.decompressobj(wbits=31).decompress(path.read_bytes()).count(b"\n")
    assert 0 < lines < 30_000
    assert f"after {lines:,} complete line(s)" in str(found)


def test_intact_gzip_checks_clean(tmp_path: Path) -> None:
    path = tmp_path / "log.csv.gz"
    path.write_bytes(gzip.compress(log_text(100).encode()))
    assert check_gzip(path) is None
    assert build(data_config(path)).input_rows == 100
