"""recsys.inference.writer: staging beside the target, parts, manifest, atomic publish."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from recsys.inference.writer import (
    MANIFEST,
    OutputDirError,
    PartWriter,
    create_staging,
    discard,
    publish,
    read_manifest,
    read_output,
    write_manifest,
)


def _table(lo: int, hi: int) -> pa.Table:
    return pa.table({"user_id": list(range(lo, hi)), "rank": [1] * (hi - lo)})


def _write(target: Path, chunks: list[tuple[int, int]], rank: int = 0) -> Path:
    staging = create_staging(target)
    writer = PartWriter(staging, rank=rank)
    for lo, hi in chunks:
        writer.write(_table(lo, hi))
    write_manifest(staging, {"kind": "test", "k": 1})
    return staging


def test_nothing_visible_until_published(tmp_path: Path) -> None:
    target = tmp_path / "out"
    staging = _write(target, [(0, 3), (3, 5), (5, 5)])  # the empty table writes no part
    assert not target.exists()
    assert staging.parent == tmp_path and staging.name.startswith(".out.tmp-")
    publish(staging, target)
    assert not staging.exists()
    manifest = read_manifest(target)
    assert manifest["rows"] == 5 and manifest["kind"] == "test"
    assert [p["file"] for p in manifest["parts"]] == ["part-rank0-00000.parquet", "part-rank0-00001.parquet"]
    assert read_output(target)["user_id"].to_list() == [0, 1, 2, 3, 4]


def test_manifest_counts_every_ranks_parts(tmp_path: Path) -> None:
    staging = create_staging(tmp_path / "out")
    PartWriter(staging, rank=0).write(_table(0, 2))
    PartWriter(staging, rank=1).write(_table(2, 7))
    manifest = write_manifest(staging, {})
    assert manifest["rows"] == 7
    assert {p["file"]: p["rows"] for p in manifest["parts"]} == {
        "part-rank0-00000.parquet": 2,
        "part-rank1-00000.parquet": 5,
    }


def test_replaces_a_previous_output_and_refuses_foreign_directories(tmp_path: Path) -> None:
    target = tmp_path / "out"
    publish(_write(target, [(0, 2)]), target)
    publish(_write(target, [(10, 13)]), target)
    assert read_output(target)["user_id"].to_list() == [10, 11, 12]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or retired dirs left

    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(OutputDirError, match="refusing to replace it"):
        create_staging(foreign)
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(OutputDirError, match="not a directory"):
        create_staging(tmp_path / "file")


def test_incomplete_staging_cannot_be_published(tmp_path: Path) -> None:
    staging = create_staging(tmp_path / "out")
    with pytest.raises(RuntimeError, match="incomplete"):
        publish(staging, tmp_path / "out")
    discard(staging)
    assert list(tmp_path.iterdir()) == []


def test_stale_staging_of_a_dead_process_is_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    stale = tmp_path / f".out.tmp-{pid}-abc123"
    stale.mkdir()
    (stale / "part-rank0-00000.parquet").write_bytes(b"half")
    unrelated = tmp_path / f".other.tmp-{pid}-abc123"
    unrelated.mkdir()
    fresh = create_staging(tmp_path / "out")
    assert not stale.exists() and fresh.exists() and unrelated.exists()
    assert not (fresh / MANIFEST).exists()
