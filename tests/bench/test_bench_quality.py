"""bench/bench_quality.py end to end on the bundled sample, with a budget of a fraction of a minute."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quality_bench_prints_one_json_object_with_every_row(tmp_path: Path) -> None:
    command = [
        sys.executable,
        str(ROOT / "bench" / "bench_quality.py"),
        "--dataset",
        "ml-latest-small",
        "--budget-minutes",
        "0.1",
        "--json",
        "--workdir",
        str(tmp_path),
        # A small model, so that a few epochs fit in 6 s even on a loaded machine.
        *("--set", "model.hidden_size=16", "--set", "model.n_layers=1", "--set", "model.max_len=32"),
        *("--set", "runtime.precision=32", "--set", "runtime.threads=1"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # the whole of stdout is the one object
    assert [r["model"] for r in result["rows"]] == ["BERT4Rec", "last-item transitions", "most popular"]
    for row in result["rows"]:
        assert 0.0 <= row["test_ndcg@10"] <= row["test_hr@10"] <= 1.0
    transitions = result["rows"][1]
    assert transitions["test_ndcg@10"] > 0.03  # a real dataset: the co-occurrence baseline finds signal
    assert result["users"] == 610 and result["published"] == []
    # The budget plans the run's length; early stopping may end it sooner, and nothing else may.
    planned = result["derived"]["train.epochs"]
    assert 1 <= result["epochs"] <= planned
    assert result["epochs"] == planned or result["stopped_early"]
    assert "model.max_len" not in result["derived"]  # set explicitly: nothing derived
    assert result["cpu"] and result["threads"] == 1
    assert (tmp_path / "run" / "model").is_dir() and (tmp_path / "test" / "metrics.json").is_file()
    # The text report is the same object as a table, with the published figures where there are some.
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_quality
    finally:
        sys.path.remove(str(ROOT / "bench"))
    text = bench_quality.table(result)
    assert all(name in text for name in ("BERT4Rec", "last-item transitions", "most popular", "CPU:"))
    published = [
        {"model": m, "test_ndcg@10": n, "test_hr@10": h, "source": s}
        for m, n, h, s in bench_quality.PUBLISHED["ml-1m"]
    ]
    text = bench_quality.table({**result, "published": published})
    assert "SASRec+ with 3000 sampled negatives" in text and "0.1857" in text
