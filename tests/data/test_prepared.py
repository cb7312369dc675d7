"""The prepared directory: files and manifest, atomic write, reuse, loading and its errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from recsys.data.errors import PreparedDatasetError
from recsys.data.pipeline import prepare
from recsys.data.prepared import FORMAT_VERSION, PreparedDataset
from recsys.data.synthetic import write_log
from tests.data.conftest import data_config

FILES = {
    "interactions.parquet",
    "items.parquet",
    "manifest.json",
    "report.json",
    "report.txt",
    "seq_length_hist.png",
    "users.parquet",
}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_log(tmp_path / "in" / "log.csv", n_users=40, n_items=30, n_interactions=600, seed=1)


def test_writes_files_and_manifest(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    outcome = prepare(data_config(source, output_dir=out, cleaning={"min_user_interactions": 3}))
    assert not outcome.reused
    assert {p.name for p in out.iterdir()} == FILES
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["config"]["cleaning"]["min_user_interactions"] == 3
    assert manifest["config"]["source"]["path"] == str(source)
    fingerprint = manifest["source"]["fingerprint"]
    assert fingerprint["size"] == source.stat().st_size and len(fingerprint["sha256"]) == 64
    assert manifest["source"]["format"] == "csv"
    counts = manifest["counts"]
    assert counts["train"] + counts["validation"] + counts["test"] == counts["interactions"]
    assert manifest["files"]["interactions.parquet"] == (out / "interactions.parquet").stat().st_size
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)


def test_rerun_reuses(source: Path, tmp_path: Path) -> None:
    cfg = data_config(source, output_dir=tmp_path / "prepared")
    first = prepare(cfg)
    second = prepare(cfg)
    assert second.reused and second.manifest["created_at"] == first.manifest["created_at"]
    assert second.report == first.report
    # Inference-only settings and the output path's spelling do not change the data.
    assert prepare(cfg.model_copy(update={"unknown_ids": "drop"})).reused


def test_touched_but_identical_input_is_reused_by_hash(source: Path, tmp_path: Path) -> None:
    cfg = data_config(source, output_dir=tmp_path / "prepared")
    prepare(cfg)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert prepare(cfg).reused


def test_changed_input_or_config_rebuilds(source: Path, tmp_path: Path) -> None:
    cfg = data_config(source, output_dir=tmp_path / "prepared")
    first = prepare(cfg)
    stricter = data_config(source, output_dir=tmp_path / "prepared", cleaning={"min_user_interactions": 10})
    second = prepare(stricter)
    assert not second.reused and second.report["users"] < first.report["users"]
    write_log(source, n_users=20, n_items=30, n_interactions=300, seed=2)
    third = prepare(stricter)
    assert not third.reused and third.manifest["source"]["fingerprint"]["size"] == source.stat().st_size
    assert not prepare(stricter, force=True).reused
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_refuses_to_replace_a_foreign_directory(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(PreparedDatasetError, match="refusing"):
        prepare(data_config(source, output_dir=out))
    assert (out / "thesis.tex").exists()


def test_dataset_contract(source: Path, tmp_path: Path) -> None:
    out = prepare(data_config(source, output_dir=tmp_path / "prepared")).path
    data = PreparedDataset.load(out)
    assert data.n_users == len(data.users) and data.n_items == len(data.items)
    train = data.history("train")
    assert len(train) == data.n_users and train.users.tolist() == list(range(data.n_users))
    assert train.items.min() >= 1 and train.items.max() <= data.n_items
    assert data.history("validation") is train
    with pytest.raises(ValueError, match="read-only"):
        train.items[0] = 1
    counts = data.item_counts()
    assert counts.shape == (data.n_items + 2,) and counts.dtype == np.int64
    assert counts[0] == 0 and counts[-1] == 0 and counts.sum() == len(train.items)
    test = data.targets("test")
    assert np.all(np.diff(test.users) > 0)
    assert data.report["users"] == data.n_users
    with pytest.raises(ValueError, match="split must be"):
        data.targets("train")


def test_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PreparedDatasetError, match="not found"):
        PreparedDataset.load(tmp_path / "nothing")


def test_load_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(PreparedDatasetError, match=r"no manifest\.json"):
        PreparedDataset.load(tmp_path)


@pytest.fixture
def prepared(source: Path, tmp_path: Path) -> Path:
    return prepare(data_config(source, output_dir=tmp_path / "prepared"), plot=False).path


def test_load_corrupt_manifest(prepared: Path) -> None:
    (prepared / "manifest.json").write_text("{not json")
    with pytest.raises(PreparedDatasetError, match=r"cannot read manifest.json"):
        PreparedDataset.load(prepared)


def test_load_other_format_version(prepared: Path) -> None:
    manifest = json.loads((prepared / "manifest.json").read_text())
    manifest["format_version"] = 999
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PreparedDatasetError, match="format_version 999"):
        PreparedDataset.load(prepared)


def test_load_truncated_file(prepared: Path) -> None:
    data = (prepared / "interactions.parquet").read_bytes()
    (prepared / "interactions.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(PreparedDatasetError, match=r"interactions\.parquet has"):
        PreparedDataset.load(prepared)


def test_load_missing_vocabulary(prepared: Path) -> None:
    (prepared / "users.parquet").unlink()
    with pytest.raises(PreparedDatasetError, match=r"users\.parquet is missing"):
        PreparedDataset.load(prepared)


def test_corrupt_directory_is_rebuilt_not_reused(source: Path, tmp_path: Path, prepared: Path) -> None:
    (prepared / "items.parquet").write_bytes(b"x")
    outcome = prepare(data_config(source, output_dir=prepared), plot=False)
    assert not outcome.reused
    PreparedDataset.load(prepared)


def test_training_events_hold_out_only_the_given_users(source: Path, tmp_path: Path) -> None:
    data = PreparedDataset.load(prepare(data_config(source, output_dir=tmp_path / "prepared")).path)
    assert data.training_events(None) is data.history("train")
    val, test = data.targets("validation"), data.targets("test")
    held_out = val.users[::2]
    events = data.training_events(held_out)
    train, full = data.history("train"), data.history("test")  # full: train + validation events
    for user in range(data.n_users):
        expected = train.for_user(user) if user in set(held_out.tolist()) else full.for_user(user)
        assert events.for_user(user).tolist() == expected.tolist()
    # never a test event: every sequence is a prefix of the history before the test target
    assert len(events.items) == len(train.items) + len(val.items) - len(held_out)
    assert len(test) > 0
