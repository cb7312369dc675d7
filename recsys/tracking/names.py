"""MLflow-safe names for metrics and params, and the short dataset name every run is tagged with.

No MLflow import here: the CLI and the jobs use these names before (or without) opening a run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recsys.config import RecsysConfig

__all__ = ["dataset_name", "metric_name"]

# MLflow accepts only these characters in metric, param and tag names (mlflow.utils.validation).
_INVALID_NAME_CHARS = re.compile(r"[^/\w.\- :]")


def metric_name(name: str) -> str:
    """An MLflow-safe metric (or param) name: ``"val_ndcg@10" -> "val_ndcg_at_10"``.

    MLflow rejects '@', which every ranking metric name contains; ``_at_`` is the spelling
    ``recsys.training.module.metric_key`` uses for per-epoch metrics, so final and per-epoch values of the
    same metric line up in the UI. Any other rejected character becomes ``_``.
    """
    return _INVALID_NAME_CHARS.sub("_", name.replace("@", "_at_"))


def dataset_name(cfg: RecsysConfig) -> str:
    """A short name for the dataset: the source's folder, or its file stem."""
    path = Path(cfg.data.source.path)
    generic = {"ratings", "interactions", "data", "train", "log"}
    return path.parent.name if path.stem.lower() in generic and path.parent.name else path.stem
