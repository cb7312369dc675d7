"""The logged model serves anywhere ``recsys`` installs: built wheel -> fresh venv -> load -> predict.

What is checked, end to end (issue 11, bar 1):

- ``pip wheel --no-deps`` of this repository gives a wheel with ONE top-level package, ``recsys`` (plus
  its ``py.typed`` and the licence);
- ``recsys train`` (tracking on, a temporary SQLite store) logs and registers the pyfunc model, whose
  ``requirements.txt`` names ``recsys==<version>`` and a torch version without a local label;
- a virtual environment made from nothing (no ``--system-site-packages``) gets exactly those
  requirements, ``recsys`` from the wheel, the rest from the machine's package index and pip's cache;
- there, from a folder outside the repository, ``mlflow.pyfunc.load_model("models:/<name>/1")`` loads
  the model and ``predict`` gives what ``recsys recommend`` writes for the same users.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import venv
import zipfile
from pathlib import Path

import mlflow
import pandas as pd
import polars as pl
import pytest

import recsys
from recsys.cli import main as cli_main
from recsys.config import to_yaml
from recsys.jobs import train
from recsys.tracking.pyfunc import public_version
from tests.training.helpers import planted_rule_log, tiny_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
K = 5
PIP_TIMEOUT_S = 900
"""A cold pip cache downloads MLflow and its dependencies once; after that the install is local."""

# Runs inside the fresh venv: load by registry URI, predict, and show where recsys was imported from.
_SERVE = textwrap.dedent(
    """
    import json, sys
    import mlflow, pandas as pd
    import recsys
    spec = json.loads(sys.argv[1])
    mlflow.set_tracking_uri(spec["tracking_uri"])
    model = mlflow.pyfunc.load_model(spec["model_uri"])
    users = pd.read_parquet(spec["users"])
    model.predict(users, params={"k": spec["k"]}).to_parquet(spec["out"])
    try:
        import pipelines  # noqa: F401
        shadow = True
    except ImportError:
        shadow = False
    print(json.dumps({"recsys": recsys.__file__, "prefix": sys.prefix, "pipelines_importable": shadow}))
    """
)


def build_wheel(out: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the sources (so no build/ or egg-info lands in the repo)."""
    src = out / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "recsys", src / "recsys", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = out / "wheels"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (wheel,) = wheels.glob("recsys-*.whl")
    return wheel


def wheel_contents(wheel: Path) -> tuple[set[str], list[str], str]:
    """(top-level names, all names, METADATA text) of a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(meta).decode()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    return top, names, metadata


def clean_env() -> dict[str, str]:
    """This process's environment without what would leak the repository or this venv into another."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MLFLOW_")}


def fresh_venv(path: Path, requirements: Path, wheels: Path) -> Path:
    """A new venv holding only ``requirements`` (``recsys`` found in ``wheels``); returns its python."""
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(path)
    python = path / "bin" / "python"
    cmd = [str(python), "-m", "pip", "install", "-q", "--no-compile", "--find-links", str(wheels)]
    done = subprocess.run(
        [*cmd, "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        env=clean_env(),
        cwd=path,
    )
    assert done.returncode == 0, f"pip install -r {requirements} failed:\n{done.stderr[-4000:]}"
    return python


def test_wheel_installs_and_serves_the_logged_model_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "dist")
    top, names, metadata = wheel_contents(wheel)
    assert top == {"recsys"}, f"the wheel must hold one top-level package, recsys; it holds {sorted(top)}"
    assert "recsys/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata

    # Train with tracking on: the train job logs the pyfunc model and registers version 1.
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlruns.db'}"
    name = f"recsys-venv-{uuid.uuid4().hex[:8]}"
    cfg = tiny_config(
        tmp_path,
        planted_rule_log(tmp_path / "log.csv", n_users=40, n_items=30),
        **{
            "train.max_epochs": 2,
            "tracking.enabled": True,
            "tracking.tracking_uri": uri,
            "tracking.experiment": "venv",
            "tracking.registered_model": name,
        },
    )
    trained = train.run(cfg)
    assert trained.registered_version == "1"
    model_uri = f"models:/{name}/1"

    mlflow.set_tracking_uri(uri)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(model_uri))
    declared = requirements.read_text(encoding="utf-8").split()
    assert f"recsys=={recsys.__version__}" in declared
    (torch_pin,) = [r for r in declared if r.startswith("torch==")]
    assert "+" not in torch_pin and torch_pin == f"torch=={public_version(torch_pin.split('==')[1])}"
    assert not [r for r in declared if "+" in r], declared

    python = fresh_venv(tmp_path / "venv", requirements, wheel.parent)

    # What the CLI writes for every user ...
    users = tmp_path / "users.parquet"
    pl.DataFrame({"user_id": [f"u{i}" for i in range(40)]}).write_parquet(users)
    config = tmp_path / "config.yaml"
    config.write_text(to_yaml(cfg), encoding="utf-8")
    out = tmp_path / "recs"
    status = cli_main(
        [
            "recommend",
            "--config",
            str(config),
            "--set",
            "tracking.enabled=false",
            "--model",
            str(trained.fit.bundle_path),
            "--users",
            str(users),
            "--k",
            str(K),
            "--out",
            str(out),
        ]
    )
    assert status == 0
    cli = pl.read_parquet(out / "*.parquet").sort("user_id", "rank")

    # ... and what the model predicts in the fresh venv, from a folder outside the repository.
    served = tmp_path / "served.parquet"
    work = tmp_path / "elsewhere"
    work.mkdir()
    spec = {"tracking_uri": uri, "model_uri": model_uri, "users": str(users), "k": K, "out": str(served)}
    done = subprocess.run(
        [str(python), "-c", _SERVE, json.dumps(spec)],
        cwd=work,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    where = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(where["recsys"]).is_relative_to(tmp_path / "venv"), where
    assert not where["pipelines_importable"], where

    got = pl.from_pandas(pd.read_parquet(served)).sort("user_id", "rank")
    assert got.height == cli.height == 40 * K
    assert got["user_id"].to_list() == cli["user_id"].to_list()
    assert got["item_id"].to_list() == cli["item_id"].cast(got["item_id"].dtype).to_list()
    assert got["rank"].to_list() == cli["rank"].to_list()
    diff = (got["score"] - cli["score"].cast(pl.Float64)).abs().max()
    assert isinstance(diff, float) and diff < 1e-5
