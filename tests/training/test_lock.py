"""The output-directory lock: a real second process is refused with the holder's pid, a SIGKILLed
holder's lock is stale, the holder's thread may re-enter, another thread may not, nothing is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.training.lock import LOCK_NAME, OutputDirBusyError, output_lock

ROOT = Path(__file__).resolve().parents[2]

_HOLDER = """
import sys, time
from recsys.training.lock import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def start_holder(directory: Path) -> subprocess.Popen[str]:
    """A real process holding ``directory``'s lock (until killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(directory)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = start_holder(tmp_path / "run")
    yield proc
    proc.kill()
    proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()


def test_a_second_process_is_refused_with_the_holders_pid(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    recorded = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
    assert recorded["pid"] == holder.pid
    busy = rf"in use by another training run \(pid {holder.pid} on "
    with pytest.raises(OutputDirBusyError, match=busy), output_lock(tmp_path / "run"):
        pytest.fail("the lock was granted twice")


def test_a_killed_holders_lock_is_stale_and_a_clean_exit_removes_it(tmp_path: Path) -> None:
    proc = start_holder(tmp_path / "run")
    proc.kill()
    proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()
    lock = tmp_path / "run" / LOCK_NAME
    assert json.loads(lock.read_text())["pid"] == proc.pid  # left behind by the crash, but not held
    with output_lock(tmp_path / "run"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        (tmp_path / "run" / "model").mkdir()
    assert not lock.exists() and (tmp_path / "run" / "model").is_dir()


def test_reentrant_for_its_thread_refused_for_another(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "run"
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            with output_lock(target):
                pass
        except OutputDirBusyError as exc:
            errors.append(exc)

    with output_lock(target), output_lock(target):  # the train job, then fit
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1 and f"pid {os.getpid()}" in str(errors[0])
    # Released, and the folders it created for nothing are gone again (nothing written, nothing left).
    assert not (tmp_path / "a").exists()
    with output_lock(target):
        pass
