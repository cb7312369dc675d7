"""MLflow fixtures (a real server on loopback, an isolated local SQLite store), registered for the whole
suite by ``tests/conftest.py`` (``pytest_plugins``).

``isolated_tracking_uri`` is not autouse here: the folders whose tests track (tests/jobs, tests/tracking,
tests/tuning, tests/pipelines) turn it on in their own conftest.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_START_TIMEOUT_S = 120.0
"""``mlflow server`` imports for ~10 s on two busy cores (20 s when it must also build its schema)."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it; closed again before returning)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and the workers it forked (its own process group, started by us)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database, migrated once: building the schema takes seconds per file."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlruns.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> Iterator[str]:
    """URI (``http://127.0.0.1:<port>``) of a real ``mlflow server`` for the whole test session.

    SQLite backend and proxied artifact store (``--artifacts-destination``) in a temporary folder, so
    clients upload artifacts over HTTP exactly as they would to a team server. One worker, no background
    job runner (it serves GenAI scoring jobs, and slows shutdown), and a pre-migrated database keep it
    light.
    """
    root = tmp_path_factory.mktemp("mlflow_server")
    shutil.copyfile(_sqlite_template, root / "mlflow.db")
    log_path = root / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with log_path.open("wb") as log:
        # A new session makes the server the leader of its own process group, so that stopping it also
        # stops the uvicorn worker and job runner it forks, and nothing else.
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-3000:]
                pytest.fail(f"mlflow server did not come up on {url} (exit {proc.poll()}):\n{tail}")
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)


@pytest.fixture
def local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _sqlite_template: Path) -> Path:
    """``tmp_path`` as the working directory with no tracking URI set, holding a ready ``mlruns.db``.

    This is the default store (``sqlite:///mlruns.db`` + ``./mlartifacts``) exactly as a user without
    configuration gets it; the database is a copy of a pre-migrated template to save the schema build.
    """
    shutil.copyfile(_sqlite_template, tmp_path / "mlruns.db")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def isolated_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees another's tracking URI.

    ``mlflow.set_tracking_uri`` also exports ``$MLFLOW_TRACKING_URI``; setting it here first makes
    monkeypatch restore the variable's original state (absent, usually) afterwards.
    """
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset-by-fixture")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        while mlflow.active_run() is not None:  # a failing test must not leave its run on the stack
            mlflow.end_run("KILLED")
        mlflow.set_tracking_uri(None)
