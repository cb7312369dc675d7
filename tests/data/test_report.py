"""The data report on a log small enough to count by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recsys.data.pipeline import prepare
from recsys.data.report import format_table, length_stats
from tests.data.conftest import WriteFile, data_config

# Users: a has 4 events, b 3, c 2, d 1 (d is removed by min_user_interactions=2); items x, y, z.
ROWS = [
    ("a", "x", 1),
    ("a", "y", 2),
    ("a", "z", 3),
    ("a", "x", 4),
    ("b", "x", 1),
    ("b", "y", 2),
    ("b", "y", 3),
    ("c", "z", 1),
    ("c", "x", 2),
    ("d", "q", 1),
]


def test_report_by_hand(write_file: WriteFile, tmp_path: Path) -> None:
    text = "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in ROWS)
    path = write_file("log.csv", text)
    out = prepare(data_config(path, output_dir=tmp_path / "p", cleaning={"min_user_interactions": 2}))
    report = out.report
    assert (report["users"], report["items"], report["interactions"]) == (3, 3, 9)
    assert report["input"] == {"rows": 10, "users": 4, "items": 4}
    assert report["removed"] == {"rows": 1, "users": 1, "items": 1}
    assert report["sparsity"] == 0.0  # 9 events over 3 users x 3 items
    assert report["sequence_length"] == {"min": 2.0, "median": 3.0, "mean": 3.0, "p90": 3.8, "max": 4.0}
    k_core = next(step for step in report["filters"] if step["step"] == "k_core")
    assert (k_core["rows_removed"], k_core["users_removed"], k_core["items_removed"]) == (1, 1, 1)
    assert report["split"]["test_rows"] == 3 and report["split"]["validation_rows"] == 3
    assert json.loads((out.path / "report.json").read_text()) == report
    table = (out.path / "report.txt").read_text()
    assert table.strip() == format_table(report)
    assert "- k_core (1 rounds)" in table and "= prepared" in table and "sparsity" in table
    assert (out.path / "seq_length_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_length_stats() -> None:
    assert length_stats(np.array([1, 2, 3, 4, 100])) == {
        "min": 1.0,
        "median": 3.0,
        "mean": 22.0,
        "p90": 61.6,
        "max": 100.0,
    }
    assert length_stats(np.array([], dtype=np.int64))["max"] == 0.0
