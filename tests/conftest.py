"""Shared fixtures: where the real datasets live, and seeded defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The MLflow server and local-store fixtures, shared by tests/jobs, tests/tracking and tests/tuning.
pytest_plugins = ["tests.mlflow_store"]

SLOW_FIXTURES = ("mlflow_server", "chromium")
"""A test that needs one of these (a real MLflow server, a browser) is slow however short its body is:
marked here, so that `make test-fast` never starts a server."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)


def shared_data_dir() -> Path:
    """`../shared/data` beside the project root, or $RECSYS_SHARED_DATA."""
    env = os.environ.get("RECSYS_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared datasets missing at {path} (CI must have them)")
        pytest.skip(f"shared datasets not found at {path}")
    return path


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True, scope="session")
def _tracking_outside_the_repo(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A test that tracks without choosing a store writes to a temporary one, never into the repo.

    Tests of the default store itself (tests/jobs, tests/tracking, tests/tuning) unset this per test and
    chdir to tmp_path.
    """
    store = tmp_path_factory.mktemp("mlflow") / "mlruns.db"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
