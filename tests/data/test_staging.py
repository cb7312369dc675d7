"""prepare over recsys.io: a killed run's leftovers are cleared (even on reuse), and a disk that fills up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recsys.data.errors import OutputWriteError
from recsys.data.pipeline import prepare
from recsys.data.synthetic import write_log
from tests.data.conftest import data_config, fill, killed_mid_write, small_tmpfs


def test_prepare_clears_a_killed_runs_leftovers_even_when_it_reuses(tmp_path: Path) -> None:
    source = write_log(tmp_path / "log.parquet", n_users=30, n_items=20, n_interactions=400, seed=3)
    target = tmp_path / "prepared"
    cfg = data_config(source, output_dir=target)
    assert not prepare(cfg, plot=False).reused
    stale = killed_mid_write(target)
    assert prepare(cfg, plot=False).reused
    assert not stale.exists()
    stale = killed_mid_write(target)
    assert not prepare(cfg, plot=False, force=True).reused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.parquet", "prepared"]


# Free space left on a 1 MiB tmpfs: too little for the interactions file (polars' write fails), or enough
# for the parquet files but not for the report and histogram (Python's and matplotlib's writes fail).
@pytest.mark.parametrize("free_kib", [4, 40])
def test_disk_full_is_one_clear_error_and_leaves_nothing(tmp_path: Path, free_kib: int) -> None:
    source = write_log(tmp_path / "log.parquet", n_users=60, n_items=40, n_interactions=1_500, seed=5)
    with small_tmpfs(tmp_path / "disk") as disk:
        filler = fill(disk, free_kib * 1024)
        target = disk / "prepared"
        with pytest.raises(OutputWriteError) as caught:
            prepare(data_config(source, output_dir=target))
        message = str(caught.value)
        assert re.match(rf"no space left on device while writing {re.escape(str(target))}/\S+;", message)
        assert list(disk.iterdir()) == [filler]
