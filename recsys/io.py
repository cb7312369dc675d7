"""Publishing a directory atomically, and hashing files: written once, one set of guarantees.

Every output directory of the project (prepared datasets, model bundles, evaluation folders,
recommendation and similar-items outputs, the registry's download cache) is written the same way:

1. into a hidden staging directory beside the target, ``<dir>/.<name>.tmp-<pid>-<random>`` (same file
   system, so the final rename is atomic);
2. every file and directory is made readable by other accounts (files 0644, directories 0755, less the
   umask: tempfile's 0700 and safetensors' 0600 would hide a model from the account that serves it), and
   flushed to disk (``fsync``);
3. renamed into place. A previous output is first renamed aside to ``.<name>.old-<pid>-<random>``, the
   new one renamed in, and only then is the old one deleted; if the second rename fails the old one is put
   back. A crash at any moment leaves the old output or the new one at ``<name>``, never neither
   (at worst, between the two renames, the old one under its ``.old-`` name).

The pid in both hidden names lets a later run delete what a killed run (even by SIGKILL) left behind, and
only that: a directory whose pid still runs belongs to a live job and is never touched, nor is any name
that does not follow the pattern. A pid means something on its own machine only: two hosts writing one
output in a shared folder at the same moment is not supported.

Operating-system errors while writing (a full disk, a quota, a read-only folder) become one
:class:`~recsys.data.errors.OutputWriteError` naming the final path (:func:`writing`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from recsys.data.errors import OutputWriteError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "atomic_dir",
    "create_staging",
    "discard",
    "make_readable",
    "pid_alive",
    "publish",
    "remove_stale",
    "sha256_file",
    "sha256_json",
    "writing",
]

FILE_MODE = 0o644
DIR_MODE = 0o755
_OWNED = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-z_]+$")
# Polars reports an I/O failure inside its own error text: "... No space left on device (os error 28)".
_POLARS_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_HASH_CHUNK = 1 << 22


# ------------------------------------------------------------------------------------------ staging
def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (someone else's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(target: Path) -> list[Path]:
    """Delete ``target``'s staging and retired directories whose owning process is gone; return them."""
    target = Path(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        match = _OWNED.match(entry.name)
        if not match or match["name"] != target.name or entry.is_symlink() or not entry.is_dir():
            continue
        if int(match["pid"]) != os.getpid() and not pid_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def create_staging(target: Path) -> Path:
    """Clear ``target``'s stale staging directories, then make a fresh, empty one beside it (0755)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    staging.chmod(DIR_MODE)
    return staging


def discard(staging: Path) -> None:
    """Remove a staging directory (after an error); the target is untouched."""
    shutil.rmtree(staging, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (changing it is not thread-safe)."""
    try:
        with Path("/proc/self/status").open(encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(root: Path) -> None:
    """The modes of ordinary files on ``root`` and everything in it: folders 0755, files 0644, less the
    umask, so that another account (a model server, a reader of the outputs) can read a published output.
    Symbolic links are left alone (and not followed)."""
    mask = _umask()
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            entry = Path(folder) / name
            if not entry.is_symlink():
                entry.chmod((DIR_MODE if entry.is_dir() else FILE_MODE) & ~mask)
    root.chmod(DIR_MODE & ~mask)


def _sync(root: Path) -> None:
    """Flush every file and folder below ``root`` to disk, so a published output survives a power cut."""
    for folder, _, files in os.walk(root):
        for name in files:
            if not (Path(folder) / name).is_symlink():
                _fsync(Path(folder) / name)
        _fsync(Path(folder))


def publish(staging: Path, target: Path) -> Path:
    """Make ``staging`` readable (:func:`make_readable`), flush it to disk and rename it to ``target``,
    replacing a previous output there.

    The previous output is renamed aside and deleted only once the new one is in place; if the second
    rename fails it is put back, so ``target`` is the old output or the new one.
    """
    staging, target = Path(staging), Path(target)
    make_readable(staging)
    _sync(staging)
    if not target.exists():
        staging.rename(target)
    else:
        retired = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        target.rename(retired)
        try:
            staging.rename(target)
        except OSError:
            retired.rename(target)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    _fsync(target.parent)  # the renames themselves
    return target


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh staging directory for ``target``; publish it when the block ends, discard it if the
    block raises (``target`` then stays as it was)."""
    staging = create_staging(target)
    try:
        yield staging
        publish(staging, target)
    except BaseException:
        discard(staging)
        raise


# ------------------------------------------------------------------------------------------ errors
def _errno(exc: BaseException) -> int | None:
    if isinstance(exc, OSError):
        return exc.errno
    if isinstance(exc, pl.exceptions.PolarsError):
        found = _POLARS_OS_ERROR.search(str(exc))
        return int(found.group(1)) if found else None
    return None


@contextmanager
def writing(path: Path, *, elsewhere: str = "another data.output_dir") -> Iterator[None]:
    """Turn an operating-system error raised inside the block into an :class:`OutputWriteError`.

    ``path`` is what the user will find once the output is published (not the staging path);
    ``elsewhere`` names the setting that moves the output to another file system.
    """
    try:
        yield
    except OutputWriteError:
        raise
    except (OSError, pl.exceptions.PolarsError) as exc:
        code = _errno(exc)
        if code is None:
            raise
        reason = "no space left on device" if code == errno.ENOSPC else os.strerror(code).lower()
        raise OutputWriteError(
            f"{reason} while writing {path}",
            expected=f"free space and write permission on that file system (or {elsewhere})",
        ) from exc


# ------------------------------------------------------------------------------------------ hashing
def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB chunks.

    SHA-256 rather than BLAKE2b: with the CPU's SHA extensions it hashes ~1.2 GB/s here, 2-3x faster
    than ``hashlib.blake2b`` (measured on the 500 MB benchmark CSV: 0.43 s vs 1.0 s).
    """
    hasher = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def sha256_json(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys), e.g. a fingerprint of settings."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
