"""recsys.tracking against a real ``mlflow server`` on loopback and against the default SQLite store."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from recsys.config import RecsysConfig, TrackingConfig, flatten, load_config
from recsys.tracking.curves import log_learning_curve
from recsys.tracking.names import dataset_name, metric_name
from recsys.tracking.run import tracked_run
from recsys.tracking.store import TrackingError, check_reachable, resolve_tracking_uri
from recsys.tracking.tracker import Tracker
from tests.mlflow_store import free_port


def make_cfg(uri: str | None, *, enabled: bool = True) -> RecsysConfig:
    """Defaults plus a tracking section; each test gets its own experiment so runs never mix."""
    overrides = [
        f"tracking.enabled={str(enabled).lower()}",
        f"tracking.experiment=test-{uuid.uuid4().hex[:8]}",
        "train.max_epochs=3",
    ]
    if uri is not None:
        overrides.append(f"tracking.tracking_uri={uri}")
    return load_config(None, overrides)


@pytest.fixture(params=[pytest.param("server", marks=pytest.mark.slow), "sqlite"])
def store(request: pytest.FixtureRequest) -> str | None:
    """Tracking URI for the config: the loopback server, or None (the local SQLite default)."""
    if request.param == "server":
        return str(request.getfixturevalue("mlflow_server"))
    request.getfixturevalue("local_store")
    return None


def run_id_of(tracker: Tracker) -> str:
    assert tracker.run_id is not None, "tracking should be enabled here"
    return tracker.run_id


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


# ------------------------------------------------------------------------------------------- a full run
def test_run_records_params_metrics_artifacts_and_tags(store: str | None, tmp_path: Path) -> None:
    cfg = make_cfg(store)
    extra = tmp_path / "extra" / "notes.txt"
    extra.parent.mkdir()
    extra.write_text("hello", encoding="utf-8")
    history = [
        {"epoch": 0.0, "train_loss": 5.0, "val_ndcg_at_10": 0.10, "val_hr_at_10": 0.20},
        {"epoch": 1.0, "train_loss": 4.0, "val_ndcg@10": 0.15, "val_hr@10": 0.30},
    ]

    with tracked_run(cfg, "train", dataset="tiny") as tracker:
        assert tracker.enabled and tracker.run_id
        for step in range(3):
            tracker.log_metrics({"val_ndcg@10": 0.1 * (step + 1), "train_loss": 3.0 - step}, step=step)
        tracker.log_params({"dataset.n_items": 42})
        tracker.log_artifact(extra, "notes")
        tracker.log_dict({"a": 1}, "summary.json")
        tracker.set_tags({"stage": "smoke"})
        tracker.log_input_fingerprint("f" * 64, source=tmp_path)
        assert log_learning_curve(tracker, history) is not None
        run_id = run_id_of(tracker)

    uri = resolve_tracking_uri(cfg.tracking)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"train {dataset_name(cfg)}"  # the config came from no file

    # Every config key is a param, with values that read back as YAML (so `--set` accepts them).
    params = run.data.params
    flat = flatten(cfg)
    assert set(flat) <= set(params)
    assert params["train.max_epochs"] == "3"
    assert params["eval.ks"] == "[1, 5, 10, 20]"
    assert params["tracking.registered_model"] == "null"
    assert params["dataset.n_items"] == "42"

    # Per-step history, with '@' spelt `_at_` as MLflow requires.
    history_ndcg = client.get_metric_history(run_id, "val_ndcg_at_10")
    assert [(m.step, round(m.value, 6)) for m in history_ndcg] == [(0, 0.1), (1, 0.2), (2, 0.3)]
    assert [m.value for m in client.get_metric_history(run_id, "train_loss")] == [3.0, 2.0, 1.0]

    assert artifact_paths(client, run_id) >= {
        "config.yaml",
        "notes/notes.txt",
        "summary.json",
        "learning_curve.png",
    }
    config_yaml = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path)))
    assert load_config(config_yaml) == cfg

    tags = run.data.tags
    assert tags["pipeline"] == "train"
    assert tags["dataset"] == "tiny"
    assert tags["stage"] == "smoke"
    assert tags["dataset.fingerprint"] == "f" * 64
    assert tags["recsys.version"]
    for package in ("torch", "pytorch_lightning", "polars", "mlflow", "python"):
        assert tags[f"version.{package}"], package
    assert tags["version.mlflow"] == mlflow.__version__
    if (Path(__file__).resolve().parents[2] / ".git").exists():
        assert len(tags["git.commit"]) == 40
        assert tags["git.dirty"] in ("true", "false")
    assert run.inputs is not None
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == ["f" * 36]


def test_default_store_is_sqlite_in_cwd_with_artifacts_beside_it(local_store: Path) -> None:
    cfg = make_cfg(None)
    assert resolve_tracking_uri(cfg.tracking) == f"sqlite:///{(local_store / 'mlruns.db').as_posix()}"
    with tracked_run(cfg, "evaluate", dataset=None) as tracker:
        run_id = run_id_of(tracker)
    assert run_id is not None
    run = MlflowClient(resolve_tracking_uri(cfg.tracking)).get_run(run_id)
    assert run.info.artifact_uri.startswith((local_store / "mlartifacts").as_uri())
    assert (local_store / "mlartifacts").is_dir()
    assert "dataset" not in run.data.tags


def test_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(TrackingConfig()) == f"sqlite:///{(tmp_path / 'mlruns.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert resolve_tracking_uri(TrackingConfig()) == "http://example.invalid:5000"
    assert resolve_tracking_uri(TrackingConfig(tracking_uri="http://cfg:1")) == "http://cfg:1"
    assert resolve_tracking_uri(TrackingConfig(tracking_uri="sqlite:////abs/x.db")) == "sqlite:////abs/x.db"


def test_metric_name() -> None:
    assert metric_name("val_ndcg@10") == "val_ndcg_at_10"
    assert metric_name("val/hr@5") == "val/hr_at_5"
    assert metric_name("a+b") == "a_b"


# ------------------------------------------------------------------------------------------- failures
def test_unreachable_server_fails_fast_naming_the_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    cfg = make_cfg(uri)
    started = time.monotonic()
    with pytest.raises(TrackingError, match=uri.replace(".", r"\.")), tracked_run(cfg, "train", dataset="x"):
        pytest.fail("the body must not run when the store is unreachable")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("make_uri", "problem"),
    [
        (lambda p: f"sqlite:///{p}/missing/dir/mlruns.db", "does not exist"),
        (lambda p: f"sqlite:///{p}/file.txt/mlruns.db", "is not a folder"),
    ],
)
def test_bad_sqlite_location_fails_fast(tmp_path: Path, make_uri: Any, problem: str) -> None:
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    uri = make_uri(tmp_path)
    with pytest.raises(TrackingError, match=problem) as info:
        check_reachable(uri)
    assert uri in str(info.value)


def test_reachable_server_passes(mlflow_server: str) -> None:
    check_reachable(mlflow_server)


def test_failing_body_marks_run_failed_with_error(mlflow_server: str, tmp_path: Path) -> None:
    cfg = make_cfg(mlflow_server)
    with pytest.raises(ValueError, match="bad batch"), tracked_run(cfg, "train", dataset="x") as tracker:
        run_id = run_id_of(tracker)
        tracker.log_metrics({"train_loss": 1.0}, step=0)
        raise ValueError("bad batch 17")
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error.type"] == "ValueError"
    assert run.data.tags["error.message"] == "bad batch 17"
    assert "raise ValueError" in run.data.tags["error.traceback_tail"]
    error_txt = Path(client.download_artifacts(run_id, "error.txt", str(tmp_path))).read_text()
    assert "Traceback" in error_txt and "ValueError: bad batch 17" in error_txt
    assert mlflow.active_run() is None


def test_keyboard_interrupt_marks_run_killed(local_store: Path) -> None:
    cfg = make_cfg(None)
    with pytest.raises(KeyboardInterrupt), tracked_run(cfg, "train", dataset="x") as tracker:
        run_id = run_id_of(tracker)
        raise KeyboardInterrupt
    run = MlflowClient(resolve_tracking_uri(cfg.tracking)).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error.type"] == "KeyboardInterrupt"


def test_lightning_sigterm_marks_run_killed_not_finished(local_store: Path) -> None:
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    cfg = make_cfg(None)
    with pytest.raises(SIGTERMException), tracked_run(cfg, "train", dataset="x") as tracker:
        run_id = run_id_of(tracker)
        raise SIGTERMException
    run = MlflowClient(resolve_tracking_uri(cfg.tracking)).get_run(run_id)
    assert run.info.status == "KILLED"


def test_disabled_tracking_makes_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # Unreachable on purpose: a disabled tracker must not even look at the store.
    cfg = make_cfg(f"http://127.0.0.1:{free_port()}", enabled=False)
    with tracked_run(cfg, "train", dataset="x") as tracker:
        assert not tracker.enabled and tracker.run_id is None
        tracker.log_metrics({"a": 1.0}, step=1)
        tracker.log_params({"a": 1})
        tracker.set_tags({"a": "b"})
        tracker.log_text("x", "x.txt")
        tracker.log_dict({"a": 1}, "x.json")
        tracker.log_artifact(tmp_path / "does-not-matter")
        tracker.log_input_fingerprint("abc")
        assert tracker.lightning_logger() is False
        assert log_learning_curve(tracker, [{"train_loss": 1.0}]) is None
    assert list(tmp_path.iterdir()) == []
    assert mlflow.active_run() is None


def test_non_zero_rank_of_a_distributed_job_makes_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning's DDP launcher sets in the extra processes
    with tracked_run(make_cfg(None), "train", dataset="x") as tracker:
        assert not tracker.enabled
    assert list(tmp_path.iterdir()) == []


def test_many_and_long_params_are_chunked_and_truncated(local_store: Path) -> None:
    cfg = make_cfg(None)
    with tracked_run(cfg, "train", dataset="x") as tracker:
        tracker.log_params({f"extra.p{i}": i for i in range(250)})  # MLflow takes 100 per request
        tracker.log_params({"extra.long": "x" * 7000})  # and 6000 characters per value
        tracker.log_metrics({f"m{i}": float(i) for i in range(1500)}, step=0)  # 1000 per request
        run_id = run_id_of(tracker)
    run = MlflowClient(resolve_tracking_uri(cfg.tracking)).get_run(run_id)
    assert run.data.params["extra.p249"] == "249"
    assert len(run.data.params["extra.long"]) == 6000
    assert run.data.params["extra.long"].endswith("...[truncated]")
    assert len(run.data.metrics) == 1500


def test_nested_runs_point_at_their_parent(mlflow_server: str) -> None:
    cfg = make_cfg(mlflow_server)
    with tracked_run(cfg, "tune", dataset="x") as parent:
        with tracked_run(cfg, "train", dataset="x", nested=True) as child:
            child_id = run_id_of(child)
        with tracked_run(cfg, "train", dataset="x", parent_run_id=parent.run_id) as sibling:
            sibling_id = run_id_of(sibling)
        active = mlflow.active_run()
        assert active is not None and active.info.run_id == parent.run_id
    client = MlflowClient(mlflow_server)
    for run_id in (child_id, sibling_id):
        assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert mlflow.active_run() is None


# ------------------------------------------------------------------------------------------- Lightning
def test_lightning_logger_writes_into_the_same_run(mlflow_server: str, tmp_path: Path) -> None:
    import pytorch_lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class TwoParams(L.LightningModule):
        """y = a * x + b: two parameters, one metric per epoch."""

        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(torch.zeros(()))
            self.b = torch.nn.Parameter(torch.zeros(()))
            self.save_hyperparameters({"lr": 0.1})  # must not reach MLflow (the config is the params)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.mean((self.a * x + self.b - y) ** 2)
            self.log("fit_mse@1", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 16)
    loader = DataLoader(TensorDataset(x, 2 * x + 1), batch_size=8)
    cfg = make_cfg(mlflow_server)
    with tracked_run(cfg, "train", dataset="x") as tracker:
        trainer = L.Trainer(
            max_epochs=2,
            logger=tracker.lightning_logger(),
            accelerator="cpu",
            devices=1,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
            default_root_dir=tmp_path,
        )
        trainer.fit(TwoParams(), loader)
        run_id = run_id_of(tracker)
        client = MlflowClient(mlflow_server)
        # fit is over but the run stays open for evaluation and artifacts.
        assert client.get_run(run_id).info.status == "RUNNING"
        tracker.log_metrics({"test_mse": 0.0})

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    per_epoch = client.get_metric_history(run_id, "fit_mse_at_1")
    assert len(per_epoch) == 2
    assert per_epoch[1].value < per_epoch[0].value
    assert "test_mse" in run.data.metrics
    assert "lr" not in run.data.params
    assert len(client.search_runs([run.info.experiment_id])) == 1
