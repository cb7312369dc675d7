"""Helpers for the data tests: tiny files written on the fly and configs pointing at them."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from recsys.config import CleaningConfig, ColumnsConfig, DataConfig, SourceConfig, SplitConfig
from tests.conftest import ROOT

WriteFile = Callable[..., Path]


@pytest.fixture
def write_file(tmp_path: Path) -> WriteFile:
    """``write_file(name, text_or_bytes, gz=False, encoding="utf-8")`` -> path under ``tmp_path``."""

    def write(name: str, content: str | bytes, *, gz: bool = False, encoding: str = "utf-8") -> Path:
        data = content.encode(encoding) if isinstance(content, str) else content
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return write


def data_config(
    path: Path,
    *,
    output_dir: Path | None = None,
    columns: dict[str, Any] | None = None,
    cleaning: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    **source: Any,
) -> DataConfig:
    """A DataConfig for ``path`` with keyword overrides per section."""
    return DataConfig(
        source=SourceConfig(path=path, columns=ColumnsConfig(**(columns or {})), **source),
        cleaning=CleaningConfig(**(cleaning or {})),
        split=SplitConfig(**(split or {})),
        output_dir=output_dir or path.parent / "prepared",
    )


@contextmanager
def small_tmpfs(where: Path, size: str = "1M") -> Iterator[Path]:
    """A real, tiny file system mounted at ``where`` (a disk that fills up); always unmounted after.

    Skips the test (with the reason) when not root or when the kernel refuses the mount.
    """
    if os.geteuid() != 0:
        pytest.skip("the disk-full case mounts a small tmpfs, which needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("the disk-full case needs mount/umount")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {where}: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(filesystem: Path, leave_bytes: int) -> Path:
    """Fill ``filesystem`` with one file until only about ``leave_bytes`` are free; return the file."""
    filler = filesystem / "filler.bin"
    free = shutil.disk_usage(filesystem).free
    filler.write_bytes(b"\0" * max(free - leave_bytes, 0))
    return filler


_KILLED_WRITER = """
import sys, time
from pathlib import Path
from recsys.io import create_staging
staging = create_staging(Path(sys.argv[1]))
(staging / "interactions.parquet").write_bytes(b"half a file")
print(staging, flush=True)
time.sleep(600)
"""


def killed_mid_write(target: Path) -> Path:
    """Start a real process that creates its staging directory and writes into it, then SIGKILL it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    staging = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    assert staging.is_dir() and f".tmp-{proc.pid}-" in staging.name
    return staging
