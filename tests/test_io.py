"""recsys.io: atomic directory publish (replacement, crash safety, modes), pid-owned staging and its
cleanup, OS write errors named, hashing."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from recsys.data.errors import OutputWriteError
from recsys.io import (
    atomic_dir,
    create_staging,
    make_readable,
    publish,
    remove_stale,
    sha256_file,
    sha256_json,
    writing,
)
from tests.data.conftest import killed_mid_write


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a process that is running for the whole test."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_killed_runs_staging_is_removed_a_live_ones_is_kept(tmp_path: Path, live_pid: int) -> None:
    target = tmp_path / "prepared"
    dead = killed_mid_write(target)
    dead_retired = tmp_path / f".prepared.old-{dead.name.split('-')[1]}-0a1b2c3d"
    dead_retired.mkdir()
    live = tmp_path / f".prepared.tmp-{live_pid}-abc_123"
    live.mkdir()
    # Not ours to judge: another output's staging, a name without a pid, a plain file.
    others = [tmp_path / f".other.tmp-{dead.name.split('-')[1]}-x1", tmp_path / ".prepared.tmp-k2j_9x1q"]
    for other in others:
        other.mkdir()
    (tmp_path / ".prepared.tmp-1-file").write_text("not a directory")
    assert sorted(remove_stale(target)) == sorted([dead, dead_retired])
    assert live.is_dir() and all(other.is_dir() for other in others)
    assert (tmp_path / ".prepared.tmp-1-file").is_file()


def test_staging_names_its_owner(tmp_path: Path) -> None:
    staging = create_staging(tmp_path / "out" / "prepared")
    assert re.fullmatch(rf"\.prepared\.tmp-{os.getpid()}-[0-9a-z_]+", staging.name)
    assert staging.stat().st_mode & 0o777 == 0o755
    assert remove_stale(tmp_path / "out" / "prepared") == [] and staging.is_dir()


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "no space left on device while writing"),
        (
            pl.exceptions.ComputeError("parquet: underlying IO error: No space left (os error 28)"),
            "no space left",
        ),
        (PermissionError(errno.EACCES, os.strerror(errno.EACCES)), "permission denied while writing"),
    ],
)
def test_writing_names_the_final_path(tmp_path: Path, error: Exception, message: str) -> None:
    expected = f"{message}.* {re.escape(str(tmp_path / 'x.parquet'))}"
    with pytest.raises(OutputWriteError, match=expected), writing(tmp_path / "x.parquet"):
        raise error


def test_writing_leaves_other_errors_alone(tmp_path: Path) -> None:
    with pytest.raises(pl.exceptions.ComputeError, match="not an I/O error"), writing(tmp_path / "x.parquet"):
        raise pl.exceptions.ComputeError("not an I/O error")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_atomic_dir_publishes_and_replaces_with_readable_modes(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model"
    with atomic_dir(target) as staging:
        (staging / "a.txt").write_text("first", encoding="utf-8")
        (staging / "sub").mkdir(mode=0o700)
        fd, name = tempfile.mkstemp(dir=staging / "sub")  # mkstemp makes 0600
        os.close(fd)
        assert not target.exists()  # nothing at the target until the block ends
    assert (target / "a.txt").read_text(encoding="utf-8") == "first"
    assert target.stat().st_mode & 0o777 == 0o755
    assert (target / "sub").stat().st_mode & 0o777 == 0o755
    assert Path(name.replace(str(staging), str(target))).stat().st_mode & 0o777 == 0o644
    with atomic_dir(target) as staging:
        (staging / "b.txt").write_text("second", encoding="utf-8")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced whole, nothing mixed in
    assert _leftovers(target.parent) == []


def test_a_failure_inside_leaves_the_old_output_and_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "eval"
    with atomic_dir(target) as staging:
        (staging / "metrics.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RuntimeError, match="half way"), atomic_dir(target) as staging:
        (staging / "metrics.json").write_text("new", encoding="utf-8")
        raise RuntimeError("half way")
    assert (target / "metrics.json").read_text(encoding="utf-8") == "{}"
    assert _leftovers(tmp_path) == []


def test_the_old_output_is_put_back_when_the_new_one_cannot_move_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "recs"
    target.mkdir()
    (target / "old.txt").write_text("old", encoding="utf-8")
    staging = create_staging(target)
    real_rename = Path.rename

    def rename(self: Path, to: Path) -> Path:
        if self == staging:
            raise OSError(errno.EXDEV, "cross-device link")
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="cross-device"):
        publish(staging, target)
    assert (target / "old.txt").read_text(encoding="utf-8") == "old"  # never lost
    assert not list(tmp_path.glob(".recs.old-*"))


_KILLED_BETWEEN_RENAMES = """
import os, sys
from pathlib import Path
from recsys import io
target = Path(sys.argv[1])
staging = io.create_staging(target)
(staging / "new.txt").write_text("new")
real = Path.rename
def rename(self, to):
    result = real(self, to)
    if ".old-" in Path(to).name:
        os.kill(os.getpid(), 9)  # killed between moving the old output aside and moving the new one in
    return result
Path.rename = rename
io.publish(staging, target)
"""


def test_a_crash_between_the_renames_loses_neither(tmp_path: Path) -> None:
    target = tmp_path / "prepared"
    target.mkdir()
    (target / "old.txt").write_text("old", encoding="utf-8")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(target)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert done.returncode == -9
    old = list(tmp_path.glob(".prepared.old-*"))
    new = list(tmp_path.glob(".prepared.tmp-*"))
    assert len(old) == len(new) == 1 and not target.exists()
    assert (old[0] / "old.txt").read_text(encoding="utf-8") == "old"
    assert (new[0] / "new.txt").read_text(encoding="utf-8") == "new"
    # The next run clears both (their process is gone) and publishes normally.
    with atomic_dir(target) as staging:
        (staging / "next.txt").write_text("next", encoding="utf-8")
    assert _leftovers(tmp_path) == [] and (target / "next.txt").is_file()


def test_hashes(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * (5 << 20))  # more than one read chunk
    assert sha256_file(path) == hashlib.sha256(b"x" * (5 << 20)).hexdigest()
    assert sha256_json({"b": 1, "a": [2]}) == sha256_json({"a": [2], "b": 1})
    assert sha256_json({"a": 1}) == hashlib.sha256(json.dumps({"a": 1}).encode()).hexdigest()


@pytest.mark.parametrize(("umask", "folder", "file"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_make_readable_gives_ordinary_modes_less_the_umask(
    tmp_path: Path, umask: int, folder: int, file: int
) -> None:
    staging = Path(tempfile.mkdtemp(dir=tmp_path))  # 0700, as every staging directory starts
    (staging / "sub").mkdir(mode=0o700)
    (staging / "sub" / "weights.bin").write_bytes(b"w")
    (staging / "sub" / "weights.bin").chmod(0o600)  # what safetensors writes
    (staging / "link").symlink_to(tmp_path)
    tmp_path.chmod(0o711)
    old = os.umask(umask)
    try:
        make_readable(staging)
    finally:
        os.umask(old)
    modes = {p.relative_to(staging).as_posix(): p.lstat().st_mode & 0o777 for p in staging.rglob("*")}
    assert staging.stat().st_mode & 0o777 == folder
    assert modes["sub"] == folder and modes["sub/weights.bin"] == file
    assert tmp_path.stat().st_mode & 0o777 == 0o711  # the link was not followed
