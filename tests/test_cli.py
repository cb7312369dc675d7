"""The CLI shell: --version, python -m recsys, config show, and config errors before any heavy import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import recsys
from recsys.cli import main
from recsys.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"recsys {recsys.__version__}"


def test_config_show_prints_the_resolved_config_with_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    sets = ["--set", "train.optimizer.lr=0.005", "--set", "runtime.threads=3"]
    assert main(["config", "show", "--config", str(ROOT / "configs" / "demo.yaml"), *sets]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["optimizer"]["lr"] == 0.005 and shown["runtime"]["threads"] == 3
    assert shown["train"]["schedule"]["kind"] == "cosine"  # from the file
    assert shown["eval"]["ks"] == [1, 5, 10, 20]  # defaults filled in
    # It is a complete config: loading it gives the same object.
    expected = load_config(ROOT / "configs" / "demo.yaml", ["train.optimizer.lr=0.005", "runtime.threads=3"])
    assert load_config(None, [f"{k}={json.dumps(v)}" for k, v in _flat(shown).items()]) == expected


def _flat(node: dict[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_a_config_typo_fails_with_status_2_before_torch_or_mlflow_is_imported() -> None:
    probe = (
        "import sys\n"
        "from recsys.cli import main\n"
        "rc = main(['train', '--set', 'train.lr=0.1'])\n"
        "heavy = sorted(m for m in ('torch', 'pytorch_lightning', 'mlflow', 'optuna') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "did you mean train.optimizer.lr?" in done.stderr
    assert "HEAVY []" in done.stdout


def test_python_dash_m_recsys_is_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "recsys", "config", "show", "--json", "--set", "model.n_layers=3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"]["n_layers"] == 3
