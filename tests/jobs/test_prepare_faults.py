"""``recsys prepare`` on faulty inputs and faulty disks: exit status 2, one located line, nothing left.

CLI-level cases of issue 12 (a truncated gzip, a directory as the input, ISO-8601 timestamps, a full
disk, a killed earlier run); the library-level cases are in tests/data.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from recsys.cli import main
from recsys.data.synthetic import write_log
from tests.data.conftest import fill, killed_mid_write, small_tmpfs

HEADER = "user_id,item_id,timestamp\n"


def prepare_cli(source: Path, out: Path, *flags: str) -> int:
    return main(
        [
            "prepare",
            "--set",
            f"data.source.path={source}",
            "--set",
            f"data.output_dir={out}",
            "--set",
            "tracking.enabled=false",
            *flags,
        ]
    )


def refused(source: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run prepare, check it failed cleanly (status 2, no traceback, nothing written); return stderr."""
    before = sorted(p.name for p in out.parent.iterdir()) if out.parent.is_dir() else []
    assert prepare_cli(source, out) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert not out.exists()
    after = sorted(p.name for p in out.parent.iterdir()) if out.parent.is_dir() else []
    assert after == before
    return captured.err


def test_truncated_gzip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = "".join(f"{k % 97},{k % 89},{k}\n" for k in range(40_000))
    packed = gzip.compress((HEADER + rows).encode())
    source = tmp_path / "log.csv.gz"
    source.write_bytes(packed[: len(packed) * 2 // 3])
    err = refused(source, tmp_path / "prepared", capsys)
    assert err.startswith(f"recsys prepare: error: {source}: truncated or corrupt gzip (")


def test_directory_as_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    err = refused(folder, tmp_path / "prepared", capsys)
    assert f"{folder}: is a directory, expected a file" in err and "not found" not in err


def test_iso_timestamps_prepare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "log.csv"
    lines = [f"{u},{10 + k},2020-01-0{k + 1}T0{u}:00:00Z" for u in range(1, 4) for k in range(4)]
    source.write_text(HEADER + "\n".join(lines) + "\n")
    assert prepare_cli(source, tmp_path / "prepared", "--json") == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert (counts["users"], counts["interactions"], counts["test"]) == (3, 12, 3)


def test_bad_iso_timestamp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "log.csv"
    source.write_text(HEADER + "1,10,2020-01-02T03:04:05\n1,11,2020-01-32T00:00:00\n")
    err = refused(source, tmp_path / "prepared", capsys)
    assert f"{source}, line 3, column 'timestamp': '2020-01-32T00:00:00' is not an ISO-8601 date/time" in err


def test_disk_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_log(tmp_path / "log.parquet", n_users=60, n_items=40, n_interactions=1_500, seed=5)
    with small_tmpfs(tmp_path / "disk") as disk:
        fill(disk, 4 * 1024)
        target = disk / "prepared"
        err = refused(source, target, capsys)
        assert err.startswith(f"recsys prepare: error: no space left on device while writing {target}/")


def test_rerun_clears_a_killed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_log(tmp_path / "log.parquet", n_users=60, n_items=40, n_interactions=1_500, seed=5)
    target = tmp_path / "prepared"
    stale = killed_mid_write(target)
    assert prepare_cli(source, target, "--json") == 0
    assert json.loads(capsys.readouterr().out)["reused"] is False
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.parquet", "prepared"]


def test_sequence_per_line_user_without_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "Toys.txt"
    source.write_text("1 5 6 7\n2 6 7 8 9\n3\n")
    err = refused(source, tmp_path / "prepared", capsys)
    assert f"{source}, line 3: user '3' has no items; expected 'user item1 item2 ...'" in err
