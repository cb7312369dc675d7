"""Every verb as a scheduler runs it: a real ``recsys`` process with stdout and stderr captured (pipes, not a
terminal), on a tiny planted-rule log tracked to a fresh SQLite store.

For each verb: ``--json`` stdout is exactly one JSON object, stderr holds no carriage-return frames, the
progress is one line per epoch / part / trial, the silent phases say what they do, and none of the
third-party noise recsys.console drops shows up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from recsys.config import to_yaml
from tests.training.helpers import planted_rule_log, tiny_config

pytestmark = pytest.mark.slow  # one process per verb: a few seconds of imports each

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 2

NOISE = (
    "GPU available",
    "TPU available",
    "litlogger",
    "LeafSpec",
    "Creating initial MLflow database tables",
    "Updating database tables",
    "exists and is not empty",
    "Downloading artifacts",
    "alembic",
    "Validating input example",
)


@dataclass
class Done:
    result: dict[str, Any]
    stderr: str

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.stderr.splitlines() if re.search(pattern, line)]


def recsys(workdir: Path, *args: str) -> Done:
    """Run ``python -m recsys ... --json``; check the output contract every verb shares."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "recsys", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # exactly one JSON value: anything else on stdout fails here
    assert isinstance(result, dict)
    assert "\r" not in done.stderr
    for noise in NOISE:
        assert noise not in done.stderr, f"{noise!r} in the stderr of recsys {args[0]}:\n{done.stderr}"
    return Done(result, done.stderr)


@dataclass
class Workspace:
    root: Path
    config: Path
    trained: Done

    @property
    def bundle(self) -> str:
        return str(self.trained.result["bundle"])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("cli")
    source = planted_rule_log(root / "log.csv", n_users=40, n_items=16, length=8)
    cfg = tiny_config(
        root,
        source,
        **{
            "train.max_epochs": EPOCHS,
            # Asked for in the file: the CLI turns bars off itself because stderr is not a terminal.
            "runtime.progress_bar": True,
            "tracking.enabled": True,
            "tracking.tracking_uri": f"sqlite:///{root / 'mlruns.db'}",
            "tracking.experiment": "cli",
        },
    )
    config = root / "config.yaml"
    config.write_text(to_yaml(cfg), encoding="utf-8")
    return Workspace(root, config, recsys(root, "train", "--config", str(config)))


def test_train(workspace: Workspace) -> None:
    done = workspace.trained
    assert done.result["epochs"] == EPOCHS and 1 <= done.result["best_epoch"] <= EPOCHS
    epochs = done.lines(r"recsys\.train: epoch \d+/\d+: ")
    assert [re.search(r"epoch (\d+)/", line).group(1) for line in epochs] == ["1", "2"]  # type: ignore[union-attr]
    for phase in (
        "preparing ",
        "training for 2 epochs",
        "validating the best epoch",
        "logging the model",
    ):
        assert done.lines(phase), phase


def test_demo_reruns_in_the_same_folder_reusing_the_data(workspace: Workspace) -> None:
    # The checkpoints of the first run are there: Lightning's "exists and is not empty" must not show.
    done = recsys(workspace.root, "demo", "--config", str(workspace.config))
    assert done.lines("reusing the prepared dataset")
    assert len(done.lines(r"recsys\.train: epoch \d+/\d+: ")) == EPOCHS


def test_prepare(workspace: Workspace) -> None:
    done = recsys(workspace.root, "prepare", "--config", str(workspace.config))
    assert done.result["reused"] is True
    assert done.lines("reusing the prepared dataset")


def test_evaluate(workspace: Workspace) -> None:
    prepared = workspace.trained.result["prepared"]
    done = recsys(
        workspace.root,
        "evaluate",
        "--config",
        str(workspace.config),
        "--model",
        workspace.bundle,
        "--data",
        prepared,
    )
    assert set(done.result["metrics"]) == {"bert4rec", "most_popular", "last_item_transitions"}
    for phase in (
        "loading the model",
        "scoring bert4rec",
        "scoring most_popular",
        "writing metrics",
        "logging",
    ):
        assert done.lines(phase), phase


def test_recommend_uses_inference_k_and_logs_each_part(workspace: Workspace) -> None:
    out = workspace.root / "recs"
    sets = ["--set", "inference.k=3", "--set", "inference.rows_per_part=30"]
    done = recsys(
        workspace.root, "recommend", "--config", str(workspace.config), "--model", workspace.bundle,
        "--out", str(out), *sets,
    )  # fmt: skip
    assert done.result["k"] == 3 and done.result["rows"] == 3 * done.result["users"]
    assert len(done.lines(r"recsys\.output: wrote part-")) == done.result["parts"] > 1


def test_similar_items(workspace: Workspace) -> None:
    out = workspace.root / "similar"
    done = recsys(
        workspace.root, "similar-items", "--config", str(workspace.config), "--model", workspace.bundle,
        "--out", str(out), "--k", "2",
    )  # fmt: skip
    assert done.result["rows"] == 2 * done.result["items"]
    assert len(done.lines(r"recsys\.output: wrote part-")) == done.result["parts"]


def test_tune(workspace: Workspace) -> None:
    tune_file = workspace.root / "tune.yaml"
    study = {
        "name": "cli",
        "storage": f"sqlite:///{workspace.root / 'optuna.db'}",
        "n_trials": 2,
        "max_epochs_per_trial": EPOCHS,
        "n_startup_trials": 1,
        "pruner": "none",
        "heartbeat_seconds": None,
    }
    doc = {
        "base": str(workspace.config),
        "overrides": {"train.output_dir": str(workspace.root / "tune")},
        "study": study,
        "space": {"train.optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
    }
    tune_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
    done = recsys(workspace.root, "tune", "--config", str(tune_file))
    assert done.result["complete"] == 2
    assert len(done.lines(r"Trial \d+ finished")) == 2
    assert len(done.lines(r"recsys\.train: epoch \d+/\d+: ")) == 2 * EPOCHS
