"""Every published output is readable by another account (a model server, a reader of the outputs):
prepared datasets, model bundles, evaluation folders, recommendation and similar-items outputs have
0755 folders and 0644 files under the usual umask, not tempfile's 0700/0600 (issue 12)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.jobs import evaluate, recommend, similar_items
from tests.inference.helpers import untrained_setup


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Mode bits of ``root`` and everything below it, by relative path."""
    found = {".": root.stat().st_mode & 0o777}
    for path in root.rglob("*"):
        found[path.relative_to(root).as_posix()] = path.stat().st_mode & 0o777
    return found


def assert_readable(root: Path) -> None:
    wrong = {
        name: oct(mode)
        for name, mode in modes(root).items()
        if mode != (0o755 if (root / name).is_dir() else 0o644)
    }
    assert not wrong, f"{root}: {wrong}"


def test_published_outputs_are_0755_and_0644(tmp_path: Path, umask_022: None) -> None:
    setup = untrained_setup(tmp_path / "s")  # prepare + save_bundle
    assert_readable(setup.dataset.path)
    assert (setup.bundle / "weights.safetensors").is_file()
    assert_readable(setup.bundle)
    assert_readable(recommend.run(setup.cfg, model=setup.bundle, k=3, out=tmp_path / "recs").out)
    assert_readable(similar_items.run(setup.cfg, model=setup.bundle, k=3, out=tmp_path / "similar").out)
    result = evaluate.run(
        setup.cfg, model=setup.bundle, data=setup.dataset.path, split="test", out=tmp_path / "eval"
    )
    assert (tmp_path / "eval" / "metrics.json").is_file() and result is not None
    assert_readable(tmp_path / "eval")
