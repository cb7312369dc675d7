"""One training run per output directory: an advisory lock file that the operating system releases.

Two ``recsys train`` runs on one ``train.output_dir`` would overwrite each other's checkpoints and bundle
(and MLflow would record one run's model under the other). :func:`output_lock` takes an exclusive
``flock`` on ``<output_dir>/.train.lock`` without waiting: a second run is refused at once with a
:class:`OutputDirBusyError` that names the holder's pid, host and start time (written into the file).

The lock belongs to the open file, so the operating system releases it when the holder exits for any
reason, SIGKILL and power loss included: a lock file left behind by a crash is stale and the next run
simply takes it. A clean exit also deletes the file (and the output directory, if the run created it and
left it empty). Taking the lock checks that the locked file is still the one at the path, so deleting it
cannot let two runs in.

Within one process the lock is re-entrant for the thread that holds it (the train job takes it, then
``fit`` takes it again). In the extra processes of a DDP run (Lightning's ``ddp`` launcher re-runs the
command once per rank) it is a no-op: rank 0 holds it for all of them.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["LOCK_NAME", "OutputDirBusyError", "output_lock"]

LOCK_NAME = ".train.lock"

_held: dict[Path, int] = {}  # resolved directory -> the id of the thread holding its lock
_guard = threading.Lock()


class OutputDirBusyError(RuntimeError):
    """Another training run holds the output directory."""


def _launched_rank_zero() -> bool:
    """False in the extra processes of a distributed launch (the variables Lightning and SLURM set)."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "").strip()
        if value not in ("", "0"):
            return False
    return True


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its pid"


def _acquire(path: Path) -> int:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise OutputDirBusyError(
                f"train.output_dir {path.parent} is in use by another training run ({_holder(path)}); "
                "wait for it to finish, or set another train.output_dir"
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), path.stat())
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder deleted the file between our open and our lock: retry


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _created_dirs(directory: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` is about to create for ``directory``, deepest first."""
    missing: list[Path] = []
    current = directory
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    return missing


@contextmanager
def output_lock(directory: str | Path) -> Iterator[Path]:
    """Hold ``<directory>/.train.lock`` exclusively for the block (creating ``directory`` if needed).

    Raises:
        OutputDirBusyError: another process (or another thread of this one) holds it; the message names
            the holder's pid.
    """
    directory = Path(directory)
    path = directory / LOCK_NAME
    if not _launched_rank_zero():
        yield path
        return
    key = directory.resolve()
    me = threading.get_ident()
    with _guard:
        owner = _held.get(key)
    if owner == me:  # re-entered by the thread that holds it (the train job, then fit)
        yield path
        return
    if owner is not None:
        raise OutputDirBusyError(
            f"train.output_dir {directory} is in use by another training run in this process "
            f"(pid {os.getpid()}); set another train.output_dir"
        )

    created = _created_dirs(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = _acquire(path)
    except BaseException:
        _remove_empty(created)
        raise
    _write_holder(fd)
    with _guard:
        _held[key] = me
    try:
        yield path
    finally:
        with _guard:
            del _held[key]
        # Delete before unlocking: a process waiting on this file then sees it is gone and retries.
        path.unlink(missing_ok=True)
        os.close(fd)
        _remove_empty(created)


def _remove_empty(created: list[Path]) -> None:
    """Remove the folders this run created, deepest first, as long as they are empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return
