"""The benchmarks in smoke mode: each code path of bench_train_epoch.py runs and its BENCH line parses;
bench_recommend.py builds and scores its model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_train_epoch.py"


# ml1m: the plain nn.TransformerEncoder reference; large: `auto` picks sampled softmax (30,000 items)
# and the reference is the project's own full softmax.
@pytest.mark.parametrize(
    ("shape", "reference", "loss"), [("ml1m", "plain", "softmax"), ("large", "softmax", "sampled")]
)
def test_smoke_run_prints_a_parsable_bench_line(shape: str, reference: str, loss: str) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--shape", shape, "--smoke", "--threads", "1"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("BENCH ")
    result = json.loads(last.removeprefix("BENCH "))
    assert result["shape"] == shape and result["smoke"] is True and result["reference"] == reference
    assert result["loss"].startswith(loss)
    for key in ("epoch_s", "tokens_per_s", "share_of_peak", "speedup_vs_reference", "reference_epoch_s"):
        assert result[key] > 0, key
    assert result["precision"] == "32" and result["cpu"] and isinstance(result["native_bf16"], bool)
    assert result["timed_steps"] == 3 and result["steps_per_epoch"] >= 3


def test_recommend_bench_large_mode_runs_and_passes_its_memory_bar() -> None:
    """bench_recommend.py builds its model without fit(): its config must be resolvable as it stands."""
    script = BENCH.parent / "bench_recommend.py"
    out = subprocess.run(
        [sys.executable, str(script), "large", "--users", "3000", "--items", "500"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bench"] == "recommend_large" and result["rows"] == 3000 * 10 and result["pass"]
