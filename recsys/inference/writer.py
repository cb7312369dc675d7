"""Atomic parquet output: parts in a hidden staging directory beside the target, a manifest, one rename.

Layout of an output directory (``recsys recommend``, ``recsys similar-items``)::

    <out>/
      part-rank0-00000.parquet   rows of one part (at most ``rows_per_part``); one series per process
      part-rank1-00000.parquet   (distributed runs: each rank writes its own parts)
      manifest.json              written last: kind, model, data fingerprint, k, row counts, parts

Nothing is ever written at ``<out>`` directly. A job writes into ``.<out>.tmp-<pid>-<random>`` in the same
folder and renames it to ``<out>`` when every part and the manifest are on disk, so a reader sees either
the previous complete output or the new one, never a partial one. A job killed mid-run (even by SIGKILL)
leaves only its staging directory, which the next job in that folder removes once its process is gone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import recsys
from recsys.data.errors import DataError
from recsys.data.staging import make_readable

_log = logging.getLogger("recsys.output")

__all__ = [
    "MANIFEST",
    "OUTPUT_FORMAT",
    "SLEEP_AFTER_PART_ENV",
    "OutputDirError",
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
_STAGING = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-z_]+$")


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_stale_staging(target: Path) -> None:
    """Delete staging directories of ``target`` left by jobs that died (their pid no longer runs).

    Only names of our exact pattern are considered, so nothing else in the folder is touched.
    """
    if not target.parent.is_dir():
        return
    for entry in target.parent.iterdir():
        match = _STAGING.match(entry.name)
        if match and match["name"] == target.name and entry.is_dir() and not _pid_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def create_staging(target: Path) -> Path:
    """Check ``target``, clear stale staging directories, and create a fresh one beside ``target``.

    Same folder as the target, so the final rename stays on one file system and is atomic.
    """
    target = Path(target)
    check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes 0700; outputs should be as readable as any other file
    return staging


def discard(staging: Path) -> None:
    """Remove a staging directory (after an error); the target is untouched."""
    shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, target: Path) -> Path:
    """Rename the complete ``staging`` directory to ``target``, replacing a previous output there.

    The previous output is first renamed aside and deleted only after the new one is in place, so
    ``target`` is at every moment either the old output or the new one (at worst, briefly, absent).
    """
    staging, target = Path(staging), Path(target)
    if not (staging / MANIFEST).is_file():
        raise RuntimeError(f"{staging}: no {MANIFEST}; refusing to publish an incomplete output")
    check_target(target)
    make_readable(staging)  # readable by other accounts, like any other file (mkdtemp makes 0700)
    if target.exists():
        retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)
    return target


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


def write_manifest(staging: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Complete ``manifest`` with the parts found in ``staging`` (every rank's) and write it, last.

    Row counts come from the parquet footers, so rank 0 can describe parts written by other processes.
    """
    staging = Path(staging)
    parts = [
        {"file": p.name, "rows": pq.ParquetFile(p).metadata.num_rows, "bytes": p.stat().st_size}
        for p in sorted(staging.glob(PART_GLOB))
    ]
    full = {
        "format": OUTPUT_FORMAT,
        "recsys_version": recsys.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **manifest,
        "rows": sum(p["rows"] for p in parts),
        "parts": parts,
    }
    (staging / MANIFEST).write_text(json.dumps(full, indent=2, default=str) + "\n", encoding="utf-8")
    return full


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a published output directory."""
    directory = Path(path)
    if not _is_output(directory):
        raise OutputDirError(f"no readable {MANIFEST}", path=directory, expected="a recsys output directory")
    data: dict[str, Any] = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    return data


def read_output(path: str | Path) -> pl.DataFrame:
    """Every part of a published output as one polars DataFrame (in part-name order)."""
    manifest = read_manifest(path)
    files = [Path(path) / p["file"] for p in manifest["parts"]]
    if not files:
        return pl.DataFrame()
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical")
