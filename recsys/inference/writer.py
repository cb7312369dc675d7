"""Atomic parquet output: parts in a hidden staging directory beside the target, a manifest, one rename.

Layout of an output directory (``recsys recommend``, ``recsys similar-items``)::

    <out>/
      part-rank0-00000.parquet   rows of one part (at most ``rows_per_part``); one series per process
      part-rank1-00000.parquet   (distributed runs: each rank writes its own parts)
      manifest.json              written last: kind, model, data fingerprint, k, row counts, parts

Nothing is ever written at ``<out>`` directly: parts and manifest go into a staging directory that is
published atomically (:mod:`recsys.io`), so a reader sees either the previous complete output or the new
one, never a partial one; a killed job's staging is removed by the next job in that folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypedDict

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import recsys
from recsys import io
from recsys.data.errors import DataError

_log = logging.getLogger("recsys.output")

__all__ = [
    "MANIFEST",
    "OUTPUT_FORMAT",
    "SLEEP_AFTER_PART_ENV",
    "OutputDirError",
    "OutputManifest",
    "PartEntry",
    "PartWriter",
    "check_target",
    "create_staging",
    "discard",
    "publish",
    "read_manifest",
    "read_output",
    "write_manifest",
]

OUTPUT_FORMAT = 1
MANIFEST = "manifest.json"
PART_GLOB = "part-*.parquet"
SLEEP_AFTER_PART_ENV = "RECSYS_TEST_SLEEP_AFTER_PART"
"""Seconds to sleep after each part is written. A test hook: it lets a test kill a job mid-run."""

# lz4 as in the prepared dataset: nearly as fast to write as no compression, files about half the size.
_COMPRESSION = "lz4"


class PartEntry(TypedDict):
    file: str
    rows: int
    bytes: int


class ModelRef(TypedDict):
    path: str
    manifest_sha256: str


class UnknownIds(TypedDict):
    policy: str
    users: int
    history_items: int
    filter_items: int


class OutputManifest(TypedDict, total=False):
    """``manifest.json`` of an output directory: the keys :func:`write_manifest` fills in (format,
    version, time, rows, parts) and those the job describes its output with."""

    format: int
    recsys_version: str
    created_at: str
    rows: int
    parts: list[PartEntry]
    kind: str  # "recommendations" or "similar_items"
    model: ModelRef
    data_fingerprint: str
    k: int
    users: int
    items: int
    columns: list[str]
    rows_per_part: int
    world_size: int
    dataset: str | None
    exclude_seen: bool
    allow: str | None
    deny: str | None
    unknown_ids: UnknownIds
    inputs: dict[str, str]
    similarity: str


class OutputDirError(DataError):
    """The output path cannot be used: it is a file, or a directory that is not a recsys output."""


def _is_output(directory: Path) -> bool:
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == OUTPUT_FORMAT


def check_target(target: Path) -> None:
    """Refuse an output path that holds something else (a file, or a foreign non-empty directory).

    A previous output (a directory with our manifest) or an empty directory may be replaced.
    """
    if target.exists() and not target.is_dir():
        raise OutputDirError("exists and is not a directory", path=target, expected="a new output directory")
    if target.is_dir() and any(target.iterdir()) and not _is_output(target):
        raise OutputDirError(
            "is a non-empty directory without a recsys output manifest; refusing to replace it",
            path=target,
            expected="a new directory, or one written by recsys recommend / similar-items",
        )


def create_staging(target: Path) -> Path:
    """Check ``target``, then make a fresh staging directory beside it (:func:`recsys.io.create_staging`)."""
    target = Path(target)
    check_target(target)
    return io.create_staging(target)


def discard(staging: Path) -> None:
    """Remove a staging directory (after an error); the target is untouched."""
    io.discard(staging)


def publish(staging: Path, target: Path) -> Path:
    """Publish a complete ``staging`` directory at ``target`` (:func:`recsys.io.publish`)."""
    staging, target = Path(staging), Path(target)
    if not (staging / MANIFEST).is_file():
        raise RuntimeError(f"{staging}: no {MANIFEST}; refusing to publish an incomplete output")
    check_target(target)
    return io.publish(staging, target)


class PartWriter:
    """Writes numbered parquet parts ``part-rank{rank}-{index:05d}.parquet`` into a staging directory.

    Args:
        directory: the staging directory (from :func:`create_staging`).
        rank: the writing process's global rank; each rank writes its own series of parts.
    """

    def __init__(self, directory: Path, *, rank: int = 0) -> None:
        self.directory = Path(directory)
        self.rank = rank
        self.parts: list[dict[str, Any]] = []
        self._sleep = float(os.environ.get(SLEEP_AFTER_PART_ENV, "0") or 0)

    @property
    def rows(self) -> int:
        """Rows written so far by this writer."""
        return sum(int(p["rows"]) for p in self.parts)

    def write(self, table: pa.Table) -> Path:
        """Write one part (empty tables are skipped: a part always holds rows)."""
        path = self.directory / f"part-rank{self.rank}-{len(self.parts):05d}.parquet"
        if table.num_rows == 0:
            return path
        pq.write_table(table, path, compression=_COMPRESSION)
        self.parts.append({"file": path.name, "rows": table.num_rows})
        # The job's progress, one line per part (the parts are large: rows_per_part rows each).
        _log.info("wrote %s: %s rows (%s so far)", path.name, f"{table.num_rows:,}", f"{self.rows:,}")
        if self._sleep > 0:
            time.sleep(self._sleep)
        return path


def write_manifest(staging: Path, manifest: OutputManifest) -> OutputManifest:
    """Complete ``manifest`` with the parts found in ``staging`` (every rank's) and write it, last.

    Row counts come from the parquet footers, so rank 0 can describe parts written by other processes.
    """
    staging = Path(staging)
    parts: list[PartEntry] = [
        {"file": p.name, "rows": pq.ParquetFile(p).metadata.num_rows, "bytes": p.stat().st_size}
        for p in sorted(staging.glob(PART_GLOB))
    ]
    full: OutputManifest = {
        "format": OUTPUT_FORMAT,
        "recsys_version": recsys.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **manifest,
        "rows": sum(p["rows"] for p in parts),
        "parts": parts,
    }
    (staging / MANIFEST).write_text(json.dumps(full, indent=2, default=str) + "\n", encoding="utf-8")
    return full


def read_manifest(path: str | Path) -> OutputManifest:
    """The manifest of a published output directory."""
    directory = Path(path)
    if not _is_output(directory):
        raise OutputDirError(f"no readable {MANIFEST}", path=directory, expected="a recsys output directory")
    data: OutputManifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    return data


def read_output(path: str | Path) -> pl.DataFrame:
    """Every part of a published output as one polars DataFrame (in part-name order)."""
    manifest = read_manifest(path)
    files = [Path(path) / p["file"] for p in manifest["parts"]]
    if not files:
        return pl.DataFrame()
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical")
