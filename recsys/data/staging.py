"""Hidden staging directories beside an output, owned by a pid, and the errors of writing into them.

An output directory ``<dir>/<name>`` is written as ``<dir>/.<name>.tmp-<pid>-<random>`` and renamed into
place; a previous output is renamed aside to ``<dir>/.<name>.old-<pid>-<random>`` and deleted once the new
one is in place. The pid in both names lets a later run delete what a killed run (even by SIGKILL) left
behind, and only that: a directory whose pid still runs belongs to a live job and is never touched, nor is
any name that does not follow the pattern. (The same pattern as :mod:`recsys.inference.writer`'s staging.)

A pid is only meaningful on the machine that wrote it: two hosts preparing into one shared folder at the
same moment is not supported.

Writing errors of the operating system (a full disk, a quota, a read-only or unwritable folder) become an
:class:`~recsys.data.errors.OutputWriteError` naming the file's final path, so the CLI reports one line.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from recsys.data.errors import OutputWriteError

__all__ = ["create_staging", "make_readable", "pid_alive", "publish", "remove_stale", "writing"]

_OWNED = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-[0-9a-z_]+$")
# Polars reports an I/O failure inside its own error text: "... No space left on device (os error 28)".
_POLARS_OS_ERROR = re.compile(r"\(os error (\d+)\)")


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
    """A fresh, empty ``.<name>.tmp-<pid>-<random>`` directory beside ``target`` (mode 0755).

    Same folder as the target, so the final rename stays on one file system and is atomic.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    # mkdtemp creates 0700; a dataset directory should be as readable as any other output.
    staging.chmod(0o755)
    return staging


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
    """Give ``root`` and everything in it the modes of ordinary files: folders 0755, files 0644 (less the
    umask), so that another account (a model server, a reader of the outputs) can read a published output.

    ``tempfile.mkdtemp`` creates 0700 folders and some writers (safetensors) 0600 files; called on a
    staging directory just before it is published. Symbolic links are left alone.
    """
    mask = _umask()
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            entry = Path(folder) / name
            if entry.is_symlink():
                continue
            entry.chmod((0o755 if entry.is_dir() else 0o644) & ~mask)
    root.chmod(0o755 & ~mask)


def publish(staging: Path, target: Path) -> None:
    """Rename the complete ``staging`` directory to ``target``, replacing a previous output there.

    The previous output is renamed aside (``.<name>.old-<pid>-<random>``) and deleted only once the new one
    is in place; if the second rename fails it is put back, so ``target`` is the old output or the new one.
    Modes are made readable first (:func:`make_readable`).
    """
    make_readable(staging)
    if not target.exists():
        staging.rename(target)
        return
    retired = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    target.rename(retired)
    try:
        staging.rename(target)
    except OSError:
        retired.rename(target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


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
