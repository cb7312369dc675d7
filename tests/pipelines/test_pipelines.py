"""The end-to-end pipelines under pipelines/ (scripts, not a package) on a tiny planted-rule dataset."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

from recsys.config import to_yaml
from recsys.jobs import recommend
from tests.inference.helpers import read_parts, untrained_setup
from tests.training.helpers import planted_rule_log, tiny_config

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str) -> ModuleType:
    """Import ``pipelines/<name>.py`` by path, as a scheduler running the file would see it."""
    spec = importlib.util.spec_from_file_location(f"pipeline_{name}", ROOT / "pipelines" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # runs the script in a fresh process
def test_batch_topk_script_writes_what_the_recommend_job_writes(tmp_path: Path) -> None:
    setup = untrained_setup(tmp_path / "setup", **{"inference.k": 4})
    config = tmp_path / "config.yaml"
    config.write_text(to_yaml(setup.cfg), encoding="utf-8")
    out = tmp_path / "today"
    script = ROOT / "pipelines" / "batch_topk.py"
    args = ["--config", str(config), "--model", str(setup.bundle), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's recsys, whichever one is installed
    )
    assert done.returncode == 0, done.stderr
    assert f"top-4 for {setup.dataset.n_users} users" in done.stdout
    expected = read_parts(recommend.run(setup.cfg, model=setup.bundle, out=tmp_path / "job").out)
    written = read_parts(out)
    assert written.height == 4 * setup.dataset.n_users
    assert written.equals(expected)


def test_nightly_chain_trains_evaluates_and_recommends_from_the_new_model(tmp_path: Path) -> None:
    nightly = load_script("nightly")
    source = planted_rule_log(tmp_path / "log.csv", n_users=40, n_items=20)
    cfg = tiny_config(tmp_path, source, **{"train.max_epochs": 1, "inference.k": 3})
    result = nightly.nightly(cfg, out=tmp_path / "recs")

    assert result.trained.fit.epochs == 1
    assert result.model == str(result.trained.fit.bundle_path)
    assert result.evaluated.users == result.prepared.counts["users"]
    assert "bert4rec" in result.evaluated.metrics
    recs = read_parts(tmp_path / "recs")
    assert recs.height == 3 * result.prepared.counts["users"]
    assert recs["user_id"].n_unique() == result.prepared.counts["users"]
    assert recs.schema["rank"] == pl.Int32
