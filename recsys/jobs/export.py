"""The ``export`` job: a model bundle's scoring path as an ONNX file, checked against torch when ONNX
Runtime is installed (:mod:`recsys.inference.export` describes the graph's inputs and outputs)."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from recsys.config import RecsysConfig
from recsys.inference.export import OnnxCheck, check_onnx, export_onnx
from recsys.tracking.loading import load_model

__all__ = ["ExportFormat", "ExportResult", "run"]

ExportFormat = Literal["onnx"]


@dataclass
class ExportResult:
    """The outcome of ``recsys export``."""

    out: Path
    format: str
    model: str
    max_len: int
    n_items: int
    bytes: int
    seconds: float
    check: OnnxCheck | None  # None: onnxruntime is not installed, the file was not run

    def to_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "format": self.format,
            "model": self.model,
            "max_len": self.max_len,
            "n_items": self.n_items,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 2),
            "check": None
            if self.check is None
            else {
                "rows": self.check.rows,
                "max_abs_diff": self.check.max_abs_diff,
                "same_top10": self.check.same_top10,
            },
        }

    def summary(self) -> str:
        lines = [
            f"{self.format} model -> {self.out} ({self.bytes / 2**20:.1f} MiB, {self.seconds:.1f} s)",
            f"input history: int64[batch, {self.max_len - 1}] left-padded item indices; "
            f"output scores: float32[batch, {self.n_items + 2}]",
        ]
        if self.check is None:
            lines.append("not checked: onnxruntime is not installed (pip install 'recsys[onnx]')")
        else:
            same = "identical" if self.check.same_top10 else "DIFFERENT"
            lines.append(
                f"checked with ONNX Runtime on {self.check.rows} histories: max |score difference| "
                f"{self.check.max_abs_diff:.2e}, top-10 {same}"
            )
        return "\n".join(lines)


def run(
    cfg: RecsysConfig, *, model: str | Path, out: str | Path, format: ExportFormat = "onnx"
) -> ExportResult:
    """Export the scoring path of ``model`` (bundle directory or ``models:/name/version``) to ``out``.

    Args:
        model: bundle directory or ``models:/name/version``.
        out: the file to write (``.onnx``).
        format: the export format; ``onnx`` is the one there is.
    """
    if format != "onnx":
        raise ValueError(f"unknown export format {format!r}; supported: onnx")
    started = time.perf_counter()
    bundle = load_model(model, cfg.tracking)
    path = export_onnx(
        bundle.model,
        out,
        metadata={"recsys.data_fingerprint": bundle.fingerprint, "recsys.model": str(model)},
    )
    seconds = time.perf_counter() - started
    check = check_onnx(bundle.model, path) if importlib.util.find_spec("onnxruntime") else None
    return ExportResult(
        out=path,
        format=format,
        model=str(model),
        max_len=bundle.model.max_len,
        n_items=bundle.model.n_items,
        bytes=path.stat().st_size,
        seconds=seconds,
        check=check,
    )
