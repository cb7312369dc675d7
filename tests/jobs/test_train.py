"""The train job end to end with MLflow: params, per-epoch metrics, artifacts, registry, failure."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from recsys.cli import main
from recsys.jobs import train
from recsys.tracking.names import dataset_name
from recsys.training import precision
from recsys.training.bundle import load_bundle
from tests.training.helpers import planted_rule_log, tiny_config


def _cfg(tmp: Path, **overrides: object):  # type: ignore[no-untyped-def]
    return tiny_config(
        tmp,
        planted_rule_log(tmp / "log.csv", n_users=60),
        **{"tracking.enabled": True, "train.max_epochs": 3, "tracking.experiment": "t", **overrides},
    )


def test_train_run_is_a_complete_mlflow_record(local_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default precision on a CPU without native bf16 (an AVX2-only one, played by the probe): fp32.
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    cfg = _cfg(
        local_store,
        **{"tracking.registered_model": "planted", "runtime.precision": "auto", "model.max_len": "auto"},
    )
    result = train.run(cfg)
    assert result.to_json()["precision"] == "32"
    assert "at precision 32" in result.summary()
    # 10 training events per user + [MASK] -> 16 (the floor); the schedule the config implies.
    assert "derived: model.max_len 16, train.epochs 3" in result.summary()
    client = MlflowClient(f"sqlite:///{local_store / 'mlruns.db'}")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["pipeline"] == "train" and "git.commit" in run.data.tags
    assert run.data.params["model.hidden_size"] == "32"
    assert run.data.params["runtime.precision"] == "auto" and run.data.params["precision"] == "32"
    assert run.data.params["model.max_len"] == "auto" and run.data.params["derived.model.max_len"] == "16"
    assert run.data.params["derived.train.epochs"] == "3"
    for key in ("train/loss", "val/ndcg_at_10", "val/hr_at_10", "train/lr", "system/tokens_per_s"):
        steps = [m.step for m in client.get_metric_history(result.run_id, key)]
        # Epochs counted from 1, as in the log (the best epoch's points also carry the logged model's id).
        assert sorted(set(steps)) == [1, 2, 3], key
    # One epoch numbering everywhere: MLflow's best step, best_epoch (metric, JSON, summary), the history.
    ndcg = client.get_metric_history(result.run_id, "val/ndcg_at_10")
    best_step = max(ndcg, key=lambda m: m.value).step
    assert run.data.metrics["best_epoch"] == best_step == result.to_json()["best_epoch"]
    assert f"best epoch {best_step}" in result.summary()
    assert [r["epoch"] for r in result.fit.history] == [1, 2, 3]
    assert "most_popular_val_ndcg_at_10" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "learning_curve.png", "history.json", "validation.json", "data"} <= artifacts
    versions = client.search_model_versions("name='planted'")
    assert [str(v.version) for v in versions] == ["1"]
    assert result.registered_version == "1"
    assert load_bundle(result.fit.bundle_path).n_items == 40


def test_crashing_training_is_marked_failed_and_stays_resumable(
    local_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys.training import module as module_mod

    cfg = _cfg(local_store)
    original = module_mod.BERT4RecModule.on_train_epoch_start

    def explode(self: module_mod.BERT4RecModule) -> None:
        if self.current_epoch == 2:
            raise RuntimeError("disk on fire")
        original(self)

    monkeypatch.setattr(module_mod.BERT4RecModule, "on_train_epoch_start", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train.run(cfg)
    client = MlflowClient(f"sqlite:///{local_store / 'mlruns.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "t"]
    (failed,) = client.search_runs([exp.experiment_id])
    assert failed.info.status == "FAILED"
    assert failed.data.tags["error.message"] == "disk on fire"
    assert (Path(cfg.train.output_dir) / "checkpoints" / "last.ckpt").is_file()

    monkeypatch.setattr(module_mod.BERT4RecModule, "on_train_epoch_start", original)
    resumed = train.run(cfg, resume=True)
    assert resumed.fit.epochs == 3
    # The failed run itself is continued: FINISHED now, the old error kept as a resume note only.
    assert resumed.run_id == failed.info.run_id
    run = client.get_run(failed.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"
    assert "error.message" not in run.data.tags
    assert run.data.tags["resume.previous_error"] == "RuntimeError: disk on fire"
    steps = [m.step for m in client.get_metric_history(failed.info.run_id, "val/ndcg_at_10")]
    assert sorted(set(steps)) == [1, 2, 3]  # epochs 1-2 from the failed attempt, epoch 3 after the resume
    assert run.info.run_name == f"train {dataset_name(cfg)} (resumed)"


def test_unreachable_tracking_uri_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = planted_rule_log(tmp_path / "log.csv", n_users=20)
    code = main(
        [
            "train",
            "--set",
            f"data.source.path={source}",
            "--set",
            f"data.output_dir={tmp_path / 'p'}",
            "--set",
            f"train.output_dir={tmp_path / 'run'}",
            "--set",
            "tracking.tracking_uri=http://127.0.0.1:9",
        ]
    )
    assert code == 2
    assert "http://127.0.0.1:9" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "p").exists()
