"""Names a person reads in MLflow: metric names grouped into sections, run names, the logged model's name.

The MLflow UI groups metric charts by the prefix before the first ``/``, named sections in alphabetical
order, then the unnamed ones under "Model metrics"; ``system/`` metrics get a tab of their own. So:

- ``test/``: the model's test metrics (evaluate run, and the training run / its logged model);
- ``train/``: per-epoch training curves (``train/loss``, ``train/lr``), step = epoch, counted from 1;
- ``val/``: per-epoch validation curves (``val/ndcg_at_10``, ``val/hr_at_10``, ``val/best_ndcg_at_10``);
- ``system/``: per-epoch speed and resource use (``system/epoch_seconds``, ``system/tokens_per_s``,
  ``system/cpu_cores_busy``, ``system/peak_rss_gb``), in the "System metrics" tab;
- no prefix: a few final scalars of a run (``best_epoch``, ``epochs``, ``train_minutes``, the baselines'
  validation NDCG@10), after the curves.

Speed lives in ``system/`` rather than ``train/``: with two training charts the validation curves are in
the first screenful of the run's metrics page; with four they are below it. MLflow rejects '@' in names,
so ``ndcg@10`` is spelt ``ndcg_at_10``. No MLflow import here: the CLI and the jobs use these names before
(or without) opening a run.
"""

from __future__ import annotations

import re
from pathlib import Path

from recsys.config import RecsysConfig, config_file

__all__ = [
    "BUNDLE_TAG",
    "SYSTEM",
    "TEST",
    "TRAIN",
    "TRAINING_RUN_TAG",
    "VAL",
    "dataset_name",
    "epoch_metric",
    "logged_model_name",
    "metric_name",
    "run_name",
    "section_metric",
]

TRAIN = "train"
VAL = "val"
TEST = "test"
SYSTEM = "system"

BUNDLE_TAG = "recsys.bundle_sha256"
"""Tag of a logged model and of the run that logged it: SHA-256 of the bundle's manifest, which hashes
every bundle file, so any copy of the bundle (a folder, a registry download) finds its training run."""
TRAINING_RUN_TAG = "recsys.training_run_id"
"""Tag of an evaluate run: the run that trained the evaluated model."""

# MLflow accepts only these characters in metric, param and tag names (mlflow.utils.validation).
_INVALID_NAME_CHARS = re.compile(r"[^/\w.\- :]")
# ... and these are refused in a logged model's name (mlflow.utils.validation._validate_logged_model_name).
_INVALID_MODEL_NAME_CHARS = re.compile(r"[/:.%\"'\s]+")

# Per-epoch keys of ``recsys.training.fit.EpochHistory`` -> their name in MLflow.
_EPOCH_METRICS = {
    "train_loss": f"{TRAIN}/loss",
    "lr": f"{TRAIN}/lr",
    "epoch_seconds": f"{SYSTEM}/epoch_seconds",
    "epoch_tokens_per_s": f"{SYSTEM}/tokens_per_s",
}
_STAGE_PREFIXES = {"train_": TRAIN, "val_": VAL, "test_": TEST}


def metric_name(name: str) -> str:
    """An MLflow-safe metric (or param) name: ``"val_ndcg@10" -> "val_ndcg_at_10"``.

    MLflow rejects '@', which every ranking metric name contains; ``_at_`` is the spelling
    ``recsys.training.module.metric_key`` uses for per-epoch metrics. Any other rejected character
    becomes ``_``.
    """
    return _INVALID_NAME_CHARS.sub("_", name.replace("@", "_at_"))


def section_metric(section: str, name: str) -> str:
    """``("test", "ndcg@10") -> "test/ndcg_at_10"``: a metric in one of the UI's sections."""
    return f"{section}/{metric_name(name)}"


def epoch_metric(key: str) -> str:
    """The MLflow name of a per-epoch history key: ``train_loss -> train/loss``,
    ``val_ndcg_at_10 -> val/ndcg_at_10``, ``epoch_seconds -> system/epoch_seconds``; names already in a
    section (``system/...``) are kept, and any other key is only made MLflow-safe."""
    if "/" in key:
        return metric_name(key)
    if key in _EPOCH_METRICS:
        return _EPOCH_METRICS[key]
    for prefix, section in _STAGE_PREFIXES.items():
        if key.startswith(prefix):
            return section_metric(section, key.removeprefix(prefix))
    return metric_name(key)


def dataset_name(cfg: RecsysConfig) -> str:
    """A short name for the dataset: the source's folder, or its file stem."""
    path = Path(cfg.data.source.path)
    generic = {"ratings", "interactions", "data", "train", "log"}
    return path.parent.name if path.stem.lower() in generic and path.parent.name else path.stem


def logged_model_name(dataset: str | None) -> str:
    """The logged model's name in MLflow: ``bert4rec-<dataset>`` (``bert4rec-ml-latest-small``)."""
    safe = _INVALID_MODEL_NAME_CHARS.sub("-", dataset or "").strip("-")
    return f"bert4rec-{safe}" if safe else "bert4rec"


def run_name(pipeline: str, cfg: RecsysConfig, *, detail: str | None = None) -> str:
    """``train demo.yaml``, ``train demo.yaml (resumed)``, ``evaluate demo.yaml (test)``.

    The config's file name when it was loaded from one (``recsys.config.config_file``), else the dataset;
    ``detail`` goes in parentheses.
    """
    source = config_file(cfg)
    label = source.name if source is not None else dataset_name(cfg)
    return f"{pipeline} {label}" + (f" ({detail})" if detail else "")
