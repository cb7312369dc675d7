"""The ``prepare`` job: raw interaction log -> prepared dataset directory (+ data report).

A thin entry point over :func:`recsys.data.pipeline.prepare`; it reads ``cfg.data`` (and
``cfg.tracking``: the run is an MLflow run with the counts as metrics and the report as artifacts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.config import RecsysConfig
from recsys.data.pipeline import prepare
from recsys.data.prepared import Counts
from recsys.data.report import DataReport, format_table
from recsys.jobs.results import result_json

__all__ = ["PrepareResult", "run"]


@dataclass(frozen=True)
class PrepareResult:
    """Outcome of the ``prepare`` job.

    Attributes:
        path: the prepared dataset directory.
        counts: users, items, interactions, train / validation / test rows, input rows.
        reused: the directory already matched the input and config, nothing was rebuilt.
        report: the data report (also in ``report.json`` inside ``path``).
        elapsed_s: wall time of the job.
        timings: seconds per stage (empty when reused).
    """

    path: Path
    counts: Counts
    reused: bool
    report: DataReport
    elapsed_s: float
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``json.dumps(result.to_json())`` is the machine-readable result)."""
        return result_json(self, digits=6)

    def table(self) -> str:
        """The data report as a plain-text table."""
        return format_table(self.report)

    def summary(self) -> str:
        """Human-readable result: the report table and where the dataset is."""
        state = "reused (input and config unchanged)" if self.reused else "written"
        return f"{self.table()}\nprepared dataset {state}: {self.path} ({self.elapsed_s:.2f} s)"


def run(cfg: RecsysConfig, *, force: bool = False) -> PrepareResult:
    """Prepare ``cfg.data.output_dir`` from ``cfg.data.source`` (or reuse it when up to date).

    Args:
        cfg: the configuration; only ``cfg.data`` is used.
        force: rebuild even when the existing directory could be reused.

    Raises:
        recsys.data.errors.DataError: for bad input; nothing is written then.
    """
    from recsys.tracking.names import dataset_name
    from recsys.tracking.run import tracked_run
    from recsys.tracking.summary import text_description

    started = time.perf_counter()
    with tracked_run(cfg, "prepare", dataset=dataset_name(cfg)) as tracker:
        outcome = prepare(cfg.data, force=force)
        result = PrepareResult(
            path=outcome.path,
            counts=outcome.manifest["counts"],
            reused=outcome.reused,
            report=outcome.report,
            elapsed_s=round(time.perf_counter() - started, 3),
            timings=outcome.timings,
        )
        tracker.set_tags({"prepared.reused": outcome.reused, "prepared.path": str(outcome.path)})
        tracker.log_metrics({f"data.{k}": v for k, v in result.counts.items() if isinstance(v, int)})
        tracker.log_metrics({f"timing.{k}": float(v) for k, v in outcome.timings.items()})
        for name in ("report.json", "report.txt", "seq_length_hist.png", "manifest.json"):
            if (outcome.path / name).is_file():
                tracker.log_artifact(outcome.path / name, "data")
        state = "reused (input and config unchanged)" if outcome.reused else "written"
        headline = f"Prepared dataset {state}: {outcome.path} ({result.elapsed_s:.2f} s)"
        tracker.set_description(text_description(headline, preformatted=result.table()))
    return result
