"""Staging directories owned by a pid (a killed run's leftovers are cleared) and a disk that fills up."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from recsys.data.errors import OutputWriteError
from recsys.data.pipeline import prepare
from recsys.data.staging import create_staging, make_readable, remove_stale, writing
from recsys.data.synthetic import write_log
from tests.data.conftest import data_config, fill, killed_mid_write, small_tmpfs


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


def test_prepare_clears_a_killed_runs_leftovers_even_when_it_reuses(tmp_path: Path) -> None:
    source = write_log(tmp_path / "log.parquet", n_users=30, n_items=20, n_interactions=400, seed=3)
    target = tmp_path / "prepared"
    cfg = data_config(source, output_dir=target)
    assert not prepare(cfg, plot=False).reused
    stale = killed_mid_write(target)
    assert prepare(cfg, plot=False).reused
    assert not stale.exists()
    stale = killed_mid_write(target)
    assert not prepare(cfg, plot=False, force=True).reused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.parquet", "prepared"]


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


# Free space left on a 1 MiB tmpfs: too little for the interactions file (polars' write fails), or enough
# for the parquet files but not for the report and histogram (Python's and matplotlib's writes fail).
@pytest.mark.parametrize("free_kib", [4, 40])
def test_disk_full_is_one_clear_error_and_leaves_nothing(tmp_path: Path, free_kib: int) -> None:
    source = write_log(tmp_path / "log.parquet", n_users=60, n_items=40, n_interactions=1_500, seed=5)
    with small_tmpfs(tmp_path / "disk") as disk:
        filler = fill(disk, free_kib * 1024)
        target = disk / "prepared"
        with pytest.raises(OutputWriteError) as caught:
            prepare(data_config(source, output_dir=target))
        message = str(caught.value)
        assert re.match(rf"no space left on device while writing {re.escape(str(target))}/\S+;", message)
        assert list(disk.iterdir()) == [filler]


@pytest.mark.parametrize(("umask", "folder", "file"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_make_readable_gives_ordinary_modes_less_the_umask(
    tmp_path: Path, umask: int, folder: int, file: int
) -> None:
    import tempfile

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
