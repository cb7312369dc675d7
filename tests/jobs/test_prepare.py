"""The prepare job: run(cfg) -> PrepareResult, reuse, JSON output; and the bundled demo config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.config import RecsysConfig, load_config
from recsys.data.errors import DataError
from recsys.data.prepared import PreparedDataset
from recsys.data.synthetic import write_log
from recsys.jobs.prepare import PrepareResult, run


def make_cfg(source: Path, out: Path, *, tracking: bool = False) -> RecsysConfig:
    return load_config(
        None,
        [
            f"data.source.path={source}",
            f"data.output_dir={out}",
            "data.cleaning.min_user_interactions=3",
            "data.cleaning.duplicates=keep_first",
            f"tracking.enabled={tracking}",
        ],
    )


def test_run_then_reuse(tmp_path: Path) -> None:
    source = write_log(tmp_path / "log.parquet", n_users=60, n_items=40, n_interactions=1_500, seed=5)
    cfg = make_cfg(source, tmp_path / "prepared")
    first = run(cfg)
    assert isinstance(first, PrepareResult) and not first.reused
    assert first.path == tmp_path / "prepared"
    assert first.counts["users"] == first.report["users"] == PreparedDataset.load(first.path).n_users
    total = first.counts["train"] + first.counts["validation"] + first.counts["test"]
    assert total == first.counts["interactions"]
    assert json.loads(json.dumps(first.to_json()))["counts"] == first.counts
    assert "= prepared" in first.summary() and "written" in first.summary()
    second = run(cfg)
    assert second.reused and second.counts == first.counts
    assert "reused" in second.summary() and "sequence length" in second.summary()


def test_run_bad_input_raises_data_error(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "missing.csv", tmp_path / "prepared")
    with pytest.raises(DataError, match=r"missing\.csv"):
        run(cfg)
    assert not (tmp_path / "prepared").exists()


def test_demo_config_prepares_the_bundled_sample(project_root: Path, tmp_path: Path) -> None:
    cfg = load_config(
        project_root / "configs" / "demo.yaml",
        [f"data.output_dir={tmp_path / 'demo'}", "tracking.enabled=false"],
    )
    source = cfg.data.source.path
    if not source.is_absolute():
        cfg = load_config(
            project_root / "configs" / "demo.yaml",
            [
                f"data.output_dir={tmp_path / 'demo'}",
                f"data.source.path={project_root / source}",
                "tracking.enabled=false",
            ],
        )
    result = run(cfg)
    assert result.report["source"]["format"] == "movielens_csv"
    assert result.counts["users"] > 500 and result.counts["items"] > 3_000


def test_prepare_run_is_tracked_in_mlflow(local_store: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    source = write_log(tmp_path / "log.parquet", n_users=60, n_items=40, n_interactions=1_500, seed=5)
    run(make_cfg(source, tmp_path / "prepared", tracking=True))
    client = MlflowClient(f"sqlite:///{local_store / 'mlruns.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "recsys"]
    (tracked,) = client.search_runs([exp.experiment_id])
    assert tracked.info.status == "FINISHED"
    assert tracked.data.tags["pipeline"] == "prepare"
    assert tracked.data.metrics["data.users"] == 60
    note = tracked.data.tags["mlflow.note.content"]  # the run's description: the data report
    assert note.startswith("Prepared dataset written: ") and "\n```\n" in note and "users" in note
    assert tracked.data.params["data.cleaning.min_user_interactions"] == "3"
    names = {a.path for a in client.list_artifacts(tracked.info.run_id, "data")}
    assert {"data/report.json", "data/seq_length_hist.png"} <= names
