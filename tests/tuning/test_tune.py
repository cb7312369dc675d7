"""``recsys tune``: space validation, the search-space function, and small real studies on planted data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import torch
import yaml
from mlflow import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial, TrialState

from recsys.config import ConfigError, load_config, to_yaml
from recsys.jobs import tune
from recsys.training.fit import MONITOR, FitResult
from recsys.tuning import objective
from recsys.tuning.objective import InvalidTrialConfigError, PruningCallback, suggest_config
from recsys.tuning.space import FloatParam
from recsys.tuning.tune_file import load_tune_config
from tests.training.helpers import planted_rule_log, tiny_config

ROOT = Path(__file__).resolve().parents[2]

SPACE: dict[str, Any] = {
    "train.optimizer.lr": {"type": "float", "low": 1.0e-4, "high": 3.0e-2, "log": True},
    "model.hidden_size": {"type": "int", "low": 16, "high": 48, "step": 16},
    "model.n_heads": [1, 2],
    "loss.kind": ["softmax", "gbce"],
    "loss.n_negatives": {"type": "int", "low": 4, "high": 16},
}


@pytest.fixture(scope="module")
def base_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny planted-rule recsys config (tracking off, 3 epochs), its data prepared on first use."""
    tmp = tmp_path_factory.mktemp("tune_base")
    cfg = tiny_config(tmp, planted_rule_log(tmp / "log.csv", n_users=120, length=10))
    path = tmp / "base.yaml"
    path.write_text(to_yaml(cfg), encoding="utf-8")
    return path


def write_tune(
    folder: Path,
    base: Path,
    *,
    space: dict[str, Any] | None = None,
    tracking: bool = False,
    **study: Any,
) -> Path:
    """A tune file in ``folder`` whose trials train under ``folder/runs``."""
    overrides: dict[str, Any] = {"train.output_dir": str(folder / "runs")}
    if tracking:
        overrides |= {"tracking.enabled": True, "tracking.experiment": "tune-test"}
    doc = {
        "base": str(base),
        "overrides": overrides,
        "study": {
            "name": "t",
            "storage": f"sqlite:///{folder / 'optuna.db'}",
            "n_trials": 3,
            "max_epochs_per_trial": 2,
            "n_startup_trials": 2,
            "pruner": "none",
            "heartbeat_seconds": None,
            **study,
        },
        "space": space or SPACE,
    }
    path = folder / "tune.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def inject(monkeypatch: pytest.MonkeyPatch, action: Callable[[int], None]) -> None:
    """Wrap the training function: ``action(trial_number)`` runs first and may raise."""
    real = objective.fit

    def fit(cfg: Any, *args: Any, **kwargs: Any) -> FitResult:
        action(int(Path(cfg.train.output_dir).name))
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(objective, "fit", fit)


def study_of(path: Path) -> optuna.Study:
    return optuna.load_study(study_name="t", storage=f"sqlite:///{path.parent / 'optuna.db'}")


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("space", "study", "expected"),
    [
        ({"model.hiden_size": [32]}, {}, "'model.hiden_size': 'hiden_size' is not a setting of model"),
        ({"model": [1]}, {}, "'model' is a section"),
        ({"data.output_dir": ["a"]}, {}, "only model, masking, loss, train settings can be tuned"),
        ({"loss.kind": ["softmax", "focal"]}, {}, "value 'focal' is not valid"),
        ({"train.batch_size": {"type": "float", "low": 8, "high": 64}}, {}, "whole numbers; use type: int"),
        ({"model.dropout": {"type": "float", "low": 0.1, "high": 1.5}}, {}, "value 1.5 is not valid"),
        (
            {"train.optimizer.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
            {},
            "log: true needs low > 0",
        ),
        (
            {"train.optimizer.lr": {"type": "uniform", "low": 0.1, "high": 0.2}},
            {},
            "space.train.optimizer.lr",
        ),
        ({"train.max_epochs": [1, 2]}, {}, "study.max_epochs_per_trial to null"),
        ({"train.optimizer.lr": [0.1]}, {"n_trial": 3}, "study.n_trial: Extra inputs are not permitted"),
        ({"train.optimizer.lr": [0.1]}, {"pruner": "sometimes"}, "study.pruner"),
        (
            {"train.optimizer.lr": [0.1]},
            {"enqueue": [{"train.wd": 0.1}]},
            "study.enqueue[0]: train.wd not in space",
        ),
    ],
)
def test_bad_tune_files_fail_before_any_trial_naming_the_key(
    tmp_path: Path, base_yaml: Path, space: dict[str, Any], study: dict[str, Any], expected: str
) -> None:
    path = write_tune(tmp_path, base_yaml, space=space, **study)
    with pytest.raises(ConfigError) as info:
        tune.run(path)
    assert expected in str(info.value)
    assert not (tmp_path / "optuna.db").exists()


def test_overrides_split_between_tune_file_and_base(tmp_path: Path, base_yaml: Path) -> None:
    path = write_tune(tmp_path, base_yaml)
    cfg, base = load_tune_config(
        path, ["study.n_trials=7", "space.train.optimizer.lr.high=0.05", "train.batch_size=8"]
    )
    assert cfg.study.n_trials == 7
    assert cfg.space["train.optimizer.lr"] == FloatParam(type="float", low=1e-4, high=0.05, log=True)
    assert base.train.batch_size == 8
    assert str(base.train.output_dir) == str(tmp_path / "runs")
    with pytest.raises(ConfigError, match=r"train\.batch_size"):
        load_tune_config(path, ["train.batch_size=0"])


# ------------------------------------------------------------------------------------------ the space
def test_suggest_config_types_ranges_log_and_conditional_keys(tmp_path: Path, base_yaml: Path) -> None:
    cfg, base = load_tune_config(write_tune(tmp_path, base_yaml))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    lrs = []
    for _ in range(40):
        trial = study.ask()
        trial_cfg = suggest_config(trial, cfg, base)
        assert isinstance(trial_cfg.model.hidden_size, int) and trial_cfg.model.hidden_size in (16, 32, 48)
        assert trial_cfg.model.n_heads in (1, 2)
        assert 1e-4 <= trial_cfg.train.optimizer.lr <= 3e-2
        lrs.append(trial_cfg.train.optimizer.lr)
        assert trial.distributions["train.optimizer.lr"] == FloatDistribution(1e-4, 3e-2, log=True)
        assert trial.distributions["model.hidden_size"] == IntDistribution(16, 48, step=16)
        assert trial.distributions["loss.kind"] == CategoricalDistribution(["softmax", "gbce"])
        # Conditional: only a loss that has negatives gets (and keeps) n_negatives.
        if trial_cfg.loss.kind == "gbce":
            assert trial.params["loss.n_negatives"] == trial_cfg.loss.n_negatives
            assert 4 <= trial_cfg.loss.n_negatives <= 16
        else:
            assert "loss.n_negatives" not in trial.params
        assert trial_cfg.train.max_epochs == 2
        assert Path(trial_cfg.train.output_dir) == tmp_path / "runs" / "trials" / str(trial.number)
        study.tell(trial, 0.0)
    # Log-uniform on [1e-4, 3e-2]: the median is near 1.7e-3; a uniform draw's would be near 1.5e-2.
    assert sorted(lrs)[len(lrs) // 2] < 6e-3


def test_invalid_combination_names_the_setting(tmp_path: Path, base_yaml: Path) -> None:
    cfg, base = load_tune_config(write_tune(tmp_path, base_yaml, space={"model.n_heads": [3, 2]}))
    with pytest.raises(InvalidTrialConfigError, match=r"n_heads=3.*divisible"):
        suggest_config(FixedTrial({"model.n_heads": 3}), cfg, base)
    assert suggest_config(FixedTrial({"model.n_heads": 2}), cfg, base).model.n_heads == 2


def test_nan_validation_stops_the_trial_without_reporting() -> None:
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    callback = PruningCallback(trial)
    trainer = SimpleNamespace(
        sanity_checking=False,
        current_epoch=0,
        should_stop=False,
        callback_metrics={MONITOR: torch.tensor(0.3)},
    )
    callback.on_validation_end(trainer, SimpleNamespace(epoch_loss=1.0))  # type: ignore[arg-type]
    # Steps are epochs counted from 1, as in the log and MLflow (Lightning's current_epoch 0 is epoch 1).
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: pytest.approx(0.3)}
    trainer.current_epoch, trainer.callback_metrics = 1, {MONITOR: torch.tensor(math.nan)}
    callback.on_validation_end(trainer, SimpleNamespace(epoch_loss=1.0))  # type: ignore[arg-type]
    assert trainer.should_stop and callback.reason and "non-finite" in callback.reason
    assert "at epoch 2" in callback.reason
    assert 2 not in trial.storage.get_trial(trial._trial_id).intermediate_values


# ------------------------------------------------------------------------------------------ studies
@pytest.mark.slow  # a whole study (several trainings)
def test_tracked_study_survives_a_crashing_trial(
    local_store: Path, base_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash_trial_1(number: int) -> None:
        if number == 1:
            raise RuntimeError("injected failure")

    inject(monkeypatch, crash_trial_1)
    result = tune.run(write_tune(local_store, base_yaml, tracking=True))

    assert (result.trials_run, result.n_complete, result.n_failed) == (3, 2, 1)
    trials = study_of(local_store / "tune.yaml").trials
    assert trials[1].state == TrialState.FAIL and "injected failure" in trials[1].user_attrs["error"]
    assert trials[0].user_attrs["baseline"] is True

    client = MlflowClient(f"sqlite:///{local_store / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("tune-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [result.parent_run_id]
    children = {r.data.tags["optuna.trial"]: r for r in runs if r not in parents}
    assert {k: (r.data.tags["state"], r.info.status) for k, r in children.items()} == {
        "0": ("complete", "FINISHED"),
        "1": ("failed", "FAILED"),
        "2": ("complete", "FINISHED"),
    }
    assert all(r.data.tags["mlflow.parentRunId"] == result.parent_run_id for r in children.values())
    curve = client.get_metric_history(children["2"].info.run_id, "val/ndcg_at_10")
    assert [m.step for m in curve] == [1, 2]  # epochs counted from 1
    assert children["2"].info.run_name == "t trial 2"
    note = children["2"].data.tags["mlflow.note.content"]
    assert note.startswith("Trial 2 of study **t**: best validation NDCG@10 **")
    parent = client.get_run(result.parent_run_id)
    assert parent.info.run_name == "tune base.yaml (study t)"
    assert (
        f"Best: trial {result.best_trial}, validation NDCG@10 **" in parent.data.tags["mlflow.note.content"]
    )
    per_trial = client.get_metric_history(result.parent_run_id, "trials/val_ndcg_at_10")
    assert sorted(m.step for m in per_trial) == [0, 2]  # the complete trials
    assert study_of(local_store / "tune.yaml").metric_names == ["validation NDCG@10"]
    assert children["2"].data.params["suggested.train.optimizer.lr"] == json.dumps(
        trials[2].params["train.optimizer.lr"]
    )

    assert result.best_config_path == local_store / "runs" / "best.yaml"
    best = load_config(result.best_config_path)
    assert best.train.optimizer.lr == pytest.approx(result.best_params["train.optimizer.lr"])
    assert str(best.train.output_dir) == str(local_store / "runs")
    assert {p.name for p in result.plots} >= {
        "optimization_history.png",
        "parallel_coordinate.png",
        "param_importances.png",
    }
    parent_files = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"best.yaml", "plots", "study.json", "tune.yaml"} <= parent_files


@pytest.mark.slow  # a whole study (several trainings)
def test_interrupted_study_resumes_with_the_remaining_trials(
    local_store: Path, base_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_tune(
        local_store, base_yaml, tracking=True, space={"train.optimizer.lr": SPACE["train.optimizer.lr"]}
    )

    def interrupt_trial_2(number: int) -> None:
        if number == 2:
            raise KeyboardInterrupt

    real_fit = objective.fit
    inject(monkeypatch, interrupt_trial_2)
    with pytest.raises(KeyboardInterrupt):
        tune.run(path, n_trials=3)
    states = [t.state for t in study_of(path).trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]

    monkeypatch.setattr(objective, "fit", real_fit)  # not undo(): that would also undo local_store's chdir
    result = tune.run(path, n_trials=3)
    assert result.trials_run == 1
    assert (result.n_complete, result.n_failed) == (3, 1)
    # The resumed run logs into the study's one parent run.
    client = MlflowClient(f"sqlite:///{local_store / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("tune-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs if "optuna.trial" not in r.data.tags] == [result.parent_run_id]
    children = {r.data.tags["optuna.trial"]: r.info.status for r in runs if "optuna.trial" in r.data.tags}
    assert children == {"0": "FINISHED", "1": "FINISHED", "2": "KILLED", "3": "FINISHED"}
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"


@pytest.mark.slow  # a whole study (several trainings)
def test_pruner_stops_a_clearly_worse_trial_and_nan_is_pruned(
    tmp_path: Path, base_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_tune(
        tmp_path,
        base_yaml,
        space={"train.optimizer.lr": SPACE["train.optimizer.lr"]},
        n_trials=3,
        max_epochs_per_trial=4,
        baseline_trial=False,
        enqueue=[
            {"train.optimizer.lr": 0.03},
            {"train.optimizer.lr": 1.0e-4},
            {"train.optimizer.lr": 0.03},
        ],  # 2 = 0 but diverges
        pruner={"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    )
    real = objective.fit

    def diverging_trial_2(cfg: Any, *args: Any, **kwargs: Any) -> FitResult:
        result = real(cfg, *args, **kwargs)
        if Path(cfg.train.output_dir).name == "2":
            result.best_val = {MONITOR: math.nan}  # as if the loss had blown up
        return result

    monkeypatch.setattr(objective, "fit", diverging_trial_2)
    result = tune.run(path)
    good, bad, nan = study_of(path).trials
    assert good.state == TrialState.COMPLETE and len(good.intermediate_values) == 4
    assert bad.state == TrialState.PRUNED and len(bad.intermediate_values) < 4
    assert "pruned at epoch" in bad.user_attrs["prune_reason"]
    assert nan.state == TrialState.PRUNED and "no finite" in nan.user_attrs["prune_reason"]
    assert (result.n_complete, result.n_pruned, result.best_trial) == (1, 2, 0)


def test_invalid_combinations_are_pruned_and_the_study_goes_on(tmp_path: Path, base_yaml: Path) -> None:
    path = write_tune(tmp_path, base_yaml, space={"model.n_heads": [3]}, n_trials=2)
    result = tune.run(path)
    assert (result.n_pruned, result.n_complete, result.best_config_path) == (2, 0, None)
    assert all("divisible" in t.user_attrs["prune_reason"] for t in study_of(path).trials)
    assert "no complete trial" in result.summary()


@pytest.mark.slow  # two worker processes
def test_two_workers_share_one_study(local_store: Path, base_yaml: Path) -> None:
    path = write_tune(
        local_store,
        base_yaml,
        tracking=True,
        n_trials=6,
        max_epochs_per_trial=1,
        space={"train.optimizer.lr": SPACE["train.optimizer.lr"]},
    )
    load_tune_config(path)  # fail here, not in two subprocesses, if the file is wrong
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "recsys", "tune", "--config", str(path), "--json"]
    workers = [
        subprocess.Popen(cmd, cwd=local_store, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()[-3000:]
    results = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]

    trials = study_of(path).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # Each worker stops once the study is full; the other's trial in flight may add one.
    assert 6 <= len(finished) <= 7 and len(finished) == len(trials)
    assert sum(r["trials_run"] for r in results) == len(trials)
    assert all(r["trials_run"] >= 1 for r in results), results
    assert results[0]["parent_run_id"] == results[1]["parent_run_id"]
    client = MlflowClient(f"sqlite:///{local_store / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("tune-test")
    assert experiment is not None
    nested = [r for r in client.search_runs([experiment.experiment_id]) if "optuna.trial" in r.data.tags]
    assert sorted(int(r.data.tags["optuna.trial"]) for r in nested) == [t.number for t in trials]
    assert {r.data.tags["mlflow.parentRunId"] for r in nested} == {results[0]["parent_run_id"]}


# ------------------------------------------------------------------------------------------ shipped files
@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "tune").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_tune_files_load(path: Path) -> None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not (path.parent / raw["base"]).is_file():
        pytest.skip(f"base config {raw['base']} not written yet")
    cfg, base = load_tune_config(path)
    assert cfg.space and base.train.output_dir
