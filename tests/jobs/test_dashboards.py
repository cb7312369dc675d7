"""What a person sees in MLflow after ``train`` then ``evaluate``: metric sections and steps, run names and
descriptions, the logged model's name and metrics, and the evaluate run linked to its training run.

One tiny tracked training (3 epochs) and one evaluation on a temporary SQLite store, shared by the module;
every assertion reads the store back with ``MlflowClient``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, Run

from recsys.config import load_config, to_yaml
from recsys.jobs import evaluate, recommend, train
from recsys.tracking.registry import resolve_model_uri
from recsys.training.bundle import load_bundle
from tests.training.helpers import planted_rule_log, tiny_config

pytestmark = pytest.mark.slow  # one training + one evaluation for the module, about 20 s on 2 cores

EPOCH_METRICS = (
    "train/loss",
    "train/lr",
    "val/ndcg_at_10",
    "val/hr_at_10",
    "val/best_ndcg_at_10",
    "system/epoch_seconds",
    "system/tokens_per_s",
    "system/cpu_cores_busy",
    "system/peak_rss_gb",
)
SUMMARY = {
    "best_epoch",
    "epochs",
    "train_minutes",
    "most_popular_val_ndcg_at_10",
    "transitions_val_ndcg_at_10",
}


@dataclass
class Tracked:
    client: MlflowClient
    trained: train.TrainResult
    evaluated: evaluate.EvaluateResult
    train_run: Run
    eval_run: Run
    model: LoggedModel


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> Iterator[Tracked]:
    root = tmp_path_factory.mktemp("dashboards")
    shutil.copyfile(_sqlite_template, root / "mlruns.db")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    base = tiny_config(
        root,
        planted_rule_log(root / "planted.csv", n_users=60),
        **{
            "train.max_epochs": 3,
            "tracking.enabled": True,
            "tracking.tracking_uri": uri,
            "tracking.experiment": "dash",
        },
    )
    path = root / "tiny.yaml"
    path.write_text(to_yaml(base), encoding="utf-8")
    cfg = load_config(path)  # from a file, as the CLI loads it: the run names say which
    client = MlflowClient(uri)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        trained = train.run(cfg)
        assert trained.fit.bundle_path is not None and trained.run_id is not None
        train_run = client.get_run(trained.run_id)  # as `make demo` leaves it: before any evaluation
        evaluated = evaluate.run(cfg, model=trained.fit.bundle_path, data=trained.prepared.path)
        mlflow.set_tracking_uri(None)
    assert evaluated.run_id is not None
    (model,) = client.search_logged_models([train_run.info.experiment_id])
    yield Tracked(client, trained, evaluated, train_run, client.get_run(evaluated.run_id), model)


def test_per_epoch_metrics_are_in_sections_with_the_epoch_as_step(tracked: Tracked) -> None:
    run_id = tracked.train_run.info.run_id
    for key in EPOCH_METRICS:
        steps = [m.step for m in tracked.client.get_metric_history(run_id, key)]
        assert sorted(set(steps)) == [1, 2, 3], key  # epochs counted from 1, never optimizer steps
    # Two training curves, then the validation ones: sections sort by name in the UI (system/ has its
    # own tab), so the validation curves stay in the first screenful; the final scalars come last.
    names = set(tracked.train_run.data.metrics)
    assert {n for n in names if "/" not in n} == SUMMARY
    assert {n for n in names if n.startswith("train/")} == {"train/loss", "train/lr"}
    assert sorted({n.split("/")[0] for n in names if "/" in n and not n.startswith("system/")}) == [
        "train",
        "val",
    ]
    values = [r["val_ndcg_at_10"] for r in tracked.trained.fit.history]
    best = tracked.client.get_metric_history(tracked.train_run.info.run_id, "val/best_ndcg_at_10")
    assert [m.value for m in sorted(best, key=lambda m: m.step)] == pytest.approx(
        [max(values[: i + 1]) for i in range(len(values))]
    )


def test_train_run_name_and_description(tracked: Tracked) -> None:
    run = tracked.train_run
    assert run.info.run_name == "train tiny.yaml"
    note = run.data.tags["mlflow.note.content"]
    best = tracked.trained.model_val["ndcg@10"]
    assert f"Best validation NDCG@10 **{best:.4f}**" in note
    for baseline in ("most popular", "transitions"):
        assert f"{baseline} {tracked.trained.baselines[baseline.replace(' ', '_')]['ndcg@10']:.4f}" in note
    assert "3 of 3 epochs" in note
    assert run.data.tags["recsys.bundle_sha256"]


def test_logged_model_is_named_and_shows_the_best_epoch(tracked: Tracked) -> None:
    assert tracked.model.name == "bert4rec-planted"  # bert4rec-<dataset>: the source is planted.csv
    history = tracked.trained.fit.history
    values = [r["val_ndcg_at_10"] for r in history]
    best = max(range(len(values)), key=values.__getitem__) + 1
    assert best > 1, "the check needs a run whose best epoch is not the first"
    shown = {m.key: m for m in tracked.model.metrics or [] if m.key == "val/ndcg_at_10"}
    assert shown["val/ndcg_at_10"].step == best
    assert shown["val/ndcg_at_10"].value == pytest.approx(max(values))
    # The old URI form still finds the renamed model.
    bundle = resolve_model_uri(
        f"runs:/{tracked.train_run.info.run_id}/model",
        tracking_uri=tracked.client.tracking_uri,
        cache_dir=Path(tracked.trained.prepared.path).parent / "cache",
    )
    assert load_bundle(bundle).n_items == 40


def test_evaluate_run_is_linked_to_its_training_run(tracked: Tracked) -> None:
    run, train_id = tracked.eval_run, tracked.train_run.info.run_id
    assert run.info.run_name == "evaluate tiny.yaml (test)"
    assert run.data.tags["recsys.training_run_id"] == train_id
    assert run.data.tags["mlflow.parentRunId"] == train_id  # nested under it in the runs table
    assert run.data.params["training_run_id"] == train_id
    assert (
        f"#/experiments/{tracked.train_run.info.experiment_id}/runs/{train_id}"
        in (run.data.tags["mlflow.note.content"])
    )
    ndcg = tracked.evaluated.metrics["bert4rec"]["ndcg@10"]
    assert run.data.metrics["test/ndcg_at_10"] == pytest.approx(ndcg)
    assert run.data.metrics["test.most_popular/hr_at_10"] == pytest.approx(
        tracked.evaluated.metrics["most_popular"]["hr@10"]
    )


def test_test_metrics_reach_the_training_run_and_its_model(tracked: Tracked) -> None:
    ndcg = tracked.evaluated.metrics["bert4rec"]["ndcg@10"]
    training = tracked.client.get_run(tracked.train_run.info.run_id)
    assert training.data.metrics["test/ndcg_at_10"] == pytest.approx(ndcg)
    assert "**Test** ([evaluate tiny.yaml (test)]" in training.data.tags["mlflow.note.content"]
    model = tracked.client.get_logged_model(tracked.model.model_id)
    on_model = {m.key: m.value for m in model.metrics or []}
    assert on_model["test/ndcg_at_10"] == pytest.approx(ndcg)


def test_batch_job_runs_have_a_name_and_a_description(tracked: Tracked) -> None:
    root = Path(tracked.trained.prepared.path).parent
    cfg = load_config(root / "tiny.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        done = recommend.run(cfg, model=tracked.trained.fit.bundle_path or "", k=5, out=root / "recs")
        mlflow.set_tracking_uri(None)
    assert done.run_id is not None
    run = tracked.client.get_run(done.run_id)
    assert run.info.run_name == "recommend tiny.yaml"
    note = run.data.tags["mlflow.note.content"]
    assert (
        note.startswith(f"top-5 for {done.users:,} users -> {done.rows:,} rows") and "MLflow run" not in note
    )


def test_resumed_run_says_so(tracked: Tracked, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(Path(tracked.trained.prepared.path).parent / "tiny.yaml")
    resumed = train.run(cfg, resume=True)  # last.ckpt is at the final epoch: nothing left to train
    assert resumed.run_id is not None
    run = tracked.client.get_run(resumed.run_id)
    assert run.info.run_name == "train tiny.yaml (resumed)"
    assert "resumed" in run.data.tags["mlflow.note.content"]
