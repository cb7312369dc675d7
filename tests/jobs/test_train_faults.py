"""``recsys train`` under faults (issue 12): a diverging run, a tracking URI that is not MLflow, a second
run on a busy output directory, and ``--resume`` (missing or mismatched checkpoint, continuing the run).

Each refusal is exit status 2 with one line on stderr, no traceback, and nothing written: no prepared
data, no bundle, no MLflow run.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from mlflow import MlflowClient

from recsys.cli import main
from recsys.config import RecsysConfig, to_yaml
from recsys.training.lock import LOCK_NAME
from tests.training.helpers import planted_rule_log, tiny_config
from tests.training.test_lock import start_holder


def write_config(tmp: Path, **overrides: object) -> tuple[RecsysConfig, Path]:
    """The tiny seeded config as a YAML file for ``recsys train --config`` (tracking into the cwd)."""
    tmp.mkdir(parents=True, exist_ok=True)
    source = tmp / "log.csv"
    if not source.exists():
        planted_rule_log(source, n_users=60)
    cfg = tiny_config(
        tmp,
        source,
        **{"train.max_epochs": 2, "tracking.enabled": True, "tracking.experiment": "faults", **overrides},
    )
    path = tmp / "train.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    return cfg, path


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI, check it failed cleanly (status 2, one line, no traceback); return that line."""
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("recsys ")]
    assert len(lines) == 1, captured.err
    return lines[0]


def runs(store: Path) -> list[object]:
    client = MlflowClient(f"sqlite:///{store / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("faults")
    return [] if experiment is None else list(client.search_runs([experiment.experiment_id]))


# ------------------------------------------------------------------------------------------ divergence
def test_diverged_run_fails_ships_no_bundle_and_is_marked_failed(
    local_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, path = write_config(
        local_store, **{"train.optimizer.lr": 100.0, "tracking.registered_model": "diverged"}
    )
    line = refused(capsys, "train", "--config", str(path))
    assert line.startswith("recsys train: error: training diverged at epoch ")
    assert "lower train.optimizer.lr (now 100)" in line
    assert not (Path(cfg.train.output_dir) / "model").exists()
    (run,) = runs(local_store)
    assert run.info.status == "FAILED"  # type: ignore[attr-defined]
    assert run.data.tags["error.type"] == "TrainingDivergedError"  # type: ignore[attr-defined]
    client = MlflowClient(f"sqlite:///{local_store / 'mlruns.db'}")
    assert client.search_registered_models() == [] and client.search_model_versions("name='diverged'") == []


# ------------------------------------------------------------------------------------------ tracking
class _LandingPage(http.server.BaseHTTPRequestHandler):
    """A web server that answers 200 with HTML to everything (a proxy's page, another web app)."""

    def do_GET(self) -> None:
        body = b"<html><body>Welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture(params=["file-server-404", "landing-page-200"])
def not_mlflow(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URI of a real HTTP server on 127.0.0.1 that is not MLflow (stopped after the test)."""
    handler = partial(_Quiet, directory=str(tmp_path)) if request.param == "file-server-404" else _LandingPage
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_http_server_that_is_not_mlflow_is_named(
    tmp_path: Path, not_mlflow: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, path = write_config(tmp_path / "job", **{"tracking.tracking_uri": not_mlflow})
    line = refused(capsys, "train", "--config", str(path))
    assert line.startswith(f"recsys train: error: {not_mlflow} answers HTTP but is not an MLflow tracking")
    assert not Path(cfg.train.output_dir).exists() and not Path(cfg.data.output_dir).exists()


# ------------------------------------------------------------------------------------------ the lock
def test_second_train_on_a_busy_output_dir_is_refused_at_once(
    local_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, path = write_config(local_store, **{"train.max_epochs": 1})
    out = Path(cfg.train.output_dir)
    holder = start_holder(out)  # a real second process holds train.output_dir
    try:
        line = refused(capsys, "train", "--config", str(path))
    finally:
        holder.kill()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    assert f"train.output_dir {out} is in use by another training run (pid {holder.pid} on " in line
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the holder's, stale now
    assert not Path(cfg.data.output_dir).exists() and runs(local_store) == []

    # The holder was SIGKILLed: the OS released its lock, and the next run takes it.
    assert main(["train", "--config", str(path), "--json"]) == 0
    capsys.readouterr()
    assert (out / "model").is_dir() and not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------ --resume
def test_resume_without_a_checkpoint_is_refused(
    local_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, path = write_config(local_store)
    line = refused(capsys, "train", "--config", str(path), "--resume")
    assert "--resume: no checkpoint to resume from at " in line and "run without --resume" in line
    assert not Path(cfg.train.output_dir).exists() and not Path(cfg.data.output_dir).exists()
    assert runs(local_store) == []


@pytest.mark.slow
def test_resume_continues_the_run_and_refuses_other_settings(
    local_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = write_config(local_store)
    assert main(["train", "--config", str(path)]) == 0
    capsys.readouterr()
    (first,) = runs(local_store)

    line = refused(capsys, "train", "--config", str(path), "--resume", "--set", "model.hidden_size=16")
    assert "was trained with other settings than this config: model.hidden_size: 32 -> 16" in line
    assert len(runs(local_store)) == 1

    # More epochs is allowed: the same MLflow run continues, its curves go on at the next epoch.
    assert main(["train", "--config", str(path), "--resume", "--set", "train.max_epochs=3"]) == 0
    capsys.readouterr()
    (resumed,) = runs(local_store)
    assert resumed.info.run_id == first.info.run_id  # type: ignore[attr-defined]
    assert resumed.info.status == "FINISHED"  # type: ignore[attr-defined]
    tags = resumed.data.tags  # type: ignore[attr-defined]
    assert tags["resumed"] == "true" and tags["resume.changed_params"] == "train.max_epochs: 2 -> 3"
    assert tags["resume.changed_derived"] == "derived.train.epochs: 2 -> 3; derived.train.total_steps: 4 -> 6"
    client = MlflowClient(f"sqlite:///{local_store / 'mlruns.db'}")
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train/loss")]  # type: ignore[attr-defined]
    assert steps == [1, 2, 3]  # epochs counted from 1: the resumed run goes on at epoch 3
    assert resumed.info.run_name == f"train {path.name} (resumed)"  # type: ignore[attr-defined]

    # A run that no longer exists in the store is linked instead of continued.
    client.delete_run(first.info.run_id)  # type: ignore[attr-defined]
    assert main(["train", "--config", str(path), "--resume", "--set", "train.max_epochs=4"]) == 0
    capsys.readouterr()
    (linked,) = runs(local_store)
    assert linked.data.tags["resumed_from"] == first.info.run_id  # type: ignore[attr-defined]
