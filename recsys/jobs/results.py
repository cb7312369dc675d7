"""What every job result shares: its JSON form (``--json``), written once from the dataclass fields."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.inference.writer import OutputManifest

__all__ = ["OutputResult", "result_json"]


def result_json(result: Any, *, skip: tuple[str, ...] = (), digits: int = 4) -> dict[str, Any]:
    """The fields of a result dataclass as a JSON-ready dict, in field order: paths as text, floats
    rounded to ``digits``, ``skip`` (large or internal fields such as a manifest) left out."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, float):
            return round(value, digits)
        return value

    return {f.name: plain(getattr(result, f.name)) for f in dataclasses.fields(result) if f.name not in skip}


@dataclass
class OutputResult:
    """What a job that publishes a parquet output directory reports (recommend, similar-items)."""

    run_id: str | None
    out: Path
    k: int
    rows: int
    parts: int
    seconds: float
    manifest: OutputManifest

    def to_json(self) -> dict[str, Any]:
        return result_json(self, skip=("manifest",))
