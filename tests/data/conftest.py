"""Helpers for the data tests: tiny files written on the fly and configs pointing at them."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recsys.config import CleaningConfig, ColumnsConfig, DataConfig, SourceConfig, SplitConfig

WriteFile = Callable[..., Path]


@pytest.fixture
def write_file(tmp_path: Path) -> WriteFile:
    """``write_file(name, text_or_bytes, gz=False, encoding="utf-8")`` -> path under ``tmp_path``."""

    def write(name: str, content: str | bytes, *, gz: bool = False, encoding: str = "utf-8") -> Path:
        data = content.encode(encoding) if isinstance(content, str) else content
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    return write


def data_config(
    path: Path,
    *,
    output_dir: Path | None = None,
    columns: dict[str, Any] | None = None,
    cleaning: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
    **source: Any,
) -> DataConfig:
    """A DataConfig for ``path`` with keyword overrides per section."""
    return DataConfig(
        source=SourceConfig(path=path, columns=ColumnsConfig(**(columns or {})), **source),
        cleaning=CleaningConfig(**(cleaning or {})),
        split=SplitConfig(**(split or {})),
        output_dir=output_dir or path.parent / "prepared",
    )
