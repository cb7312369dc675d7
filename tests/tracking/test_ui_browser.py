"""The MLflow UI really shows what ``tracked_run`` logged: headless Chromium renders the run page.

MLflow's UI is a React app: the HTML the server sends is an empty shell, so only a browser that runs the
scripts (``--dump-dom`` after a ``--virtual-time-budget``) sees the metric names. Needs Debian's
``chromium``; skipped without it locally, a failure under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from recsys.config import load_config
from recsys.tracking.run import tracked_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI containers run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
]
BUDGETS_MS = (15_000, 45_000)
"""Virtual time for the app to fetch and render; the second, longer try absorbs a loaded CI machine."""


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path to Chromium; session-scoped and listed first so a skip comes before the server starts."""
    if not Path(CHROMIUM).exists():
        message = f"headless Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{message}; CI must install it")
        pytest.skip(message)
    return CHROMIUM


def dump_dom(chromium: str, url: str, profile: Path, budget_ms: int) -> str:
    """The DOM after ``budget_ms`` of virtual time (timers and fetches settle before it is dumped)."""
    done = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def test_run_page_shows_logged_metric(chromium: str, mlflow_server: str, tmp_path: Path) -> None:
    metric = f"ui_probe_{uuid.uuid4().hex[:8]}"
    cfg = load_config(
        None, [f"tracking.tracking_uri={mlflow_server}", f"tracking.experiment=ui-{uuid.uuid4().hex[:8]}"]
    )
    with tracked_run(cfg, "train", dataset="tiny", run_name="ui-probe-run") as tracker:
        for step in range(3):
            tracker.log_metrics({metric: 0.1 * step}, step=step)
    url = f"{mlflow_server}/#/experiments/{tracker.experiment_id}/runs/{tracker.run_id}"

    dom = ""
    for attempt, budget in enumerate(BUDGETS_MS):
        dom = dump_dom(chromium, url, tmp_path / f"profile{attempt}", budget)
        if metric in dom:
            break
    assert metric in dom, f"{metric} not on {url}; DOM starts: {dom[:1500]}"
    assert "ui-probe-run" in dom
