"""Crash safety (SIGKILL mid-epoch, then --resume) and DDP with two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.training.helpers import planted_rule_log

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES: dict[str, object] = {"train.max_epochs": 5, "model.dropout": 0.1, "train.patience": 10}


def _run(
    tmp: Path, source: Path, mode: str, overrides: dict[str, object]
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.training._train_script",
            str(tmp),
            str(source),
            mode,
            json.dumps(overrides),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _result(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


@pytest.mark.slow
@pytest.mark.parametrize("ema", [None, 0.9], ids=["raw", "ema"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path: Path, ema: float | None) -> None:
    # With EMA the checkpoint carries both the averaged and the raw weights: both must come back.
    overrides = {**OVERRIDES, **({"train.ema_decay": ema} if ema is not None else {})}
    source = planted_rule_log(tmp_path / "log.csv", n_users=80)
    reference = _result(_run(tmp_path / "ref", source, "plain", overrides))

    killed = _run(tmp_path / "crash", source, "kill", overrides)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "crash" / "run" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "crash" / "run" / "model").exists()  # no bundle from a dead run

    resumed = _result(_run(tmp_path / "crash", source, "resume", overrides))
    assert resumed["history"] == reference["history"]
    assert resumed["best"] == reference["best"]
    assert resumed["epochs"] == reference["epochs"] == OVERRIDES["train.max_epochs"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_trains_a_model(tmp_path: Path) -> None:
    source = planted_rule_log(tmp_path / "log.csv", n_users=80)
    overrides = {
        **OVERRIDES,
        "train.max_epochs": 3,
        "runtime.strategy": "ddp_spawn",
        "runtime.devices": 2,
        "runtime.accelerator": "cpu",
    }
    result = _result(_run(tmp_path / "ddp", source, "plain", overrides))
    assert result["epochs"] == 3
    assert len(result["history"]) == 3 and all(v is not None for v in result["history"])
    bundle = Path(str(result["bundle"]))
    assert (bundle / "weights.safetensors").is_file()

    from recsys.training.bundle import load_bundle

    assert load_bundle(bundle).n_items == 40
