"""``make ui``: the MLflow server on the port asked for, with one worker and no job-queue workers.

Runs the Makefile's own recipe (the install step marked done with ``make -o``, the venv this test runs
in) against a copy of a migrated SQLite store, on 127.0.0.1, and stops it again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.mlflow_store import SERVER_START_TIMEOUT_S, free_port

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,  # mlflow server imports for 10-20 s on two busy cores
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
]


def _group_commands(pgid: int) -> list[str]:
    """Command lines of the processes in process group ``pgid`` (Linux /proc)."""
    commands = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # after "pid (comm)": state, ppid, pgrp
                raw = (stat.parent / "cmdline").read_bytes()
                commands.append(raw.replace(b"\0", b" ").decode(errors="replace").strip())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return commands


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_make_ui_serves_on_the_given_port_with_one_worker(tmp_path: Path, _sqlite_template: Path) -> None:
    shutil.copyfile(_sqlite_template, tmp_path / "mlruns.db")
    venv = Path(sys.prefix)
    port = free_port()
    cmd = ["make", "-f", str(ROOT / "Makefile"), "-o", f"{venv}/.installed", "ui"]
    cmd += [f"PORT={port}", f"VENV={venv}", f"MLFLOW_URI=sqlite:///{tmp_path / 'mlruns.db'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log_path = tmp_path / "ui.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"make ui did not serve {url}:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        commands = _group_commands(proc.pid)
        servers = [c for c in commands if "uvicorn" in c or "gunicorn" in c]
        assert len(servers) == 1, commands
        assert "--workers 1" in servers[0] and f"--port {port}" in servers[0]
        assert not [c for c in commands if "huey" in c], commands  # no job-queue workers
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
