"""The ``train`` job: prepare (or reuse) the data, fit BERT4Rec, compare with baselines, track it all."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import RecsysConfig
from recsys.data.fingerprint import dataset_fingerprint
from recsys.data.pipeline import PrepareOutcome, prepare
from recsys.data.prepared import PreparedDataset
from recsys.evaluation.baselines import fit_baselines
from recsys.evaluation.protocol import evaluate
from recsys.inference.recommender import Recommender
from recsys.tracking.curves import log_learning_curve
from recsys.tracking.names import dataset_name, logged_model_name, run_name
from recsys.tracking.pyfunc import log_pyfunc_model
from recsys.tracking.resume import RunRecord, recorded_run_id
from recsys.tracking.run import tracked_run
from recsys.tracking.summary import TrainFacts, train_description, train_summary_metrics
from recsys.tracking.tracker import Tracker
from recsys.training.datamodule import TrainingData
from recsys.training.fit import DEFAULT_EPOCHS, FitResult, fit
from recsys.training.lock import output_lock
from recsys.training.resume import check_resume

__all__ = ["TrainResult", "run", "validation_baselines"]

BASELINE_KS = [10]
_SHORT_NAMES = {"last_item_transitions": "transitions"}
"""The train job's table and metric keys (``val.transitions.*``) use the short name."""

_log = logging.getLogger("recsys.train")


@dataclass
class TrainResult:
    """The outcome of ``recsys train``."""

    run_id: str | None
    prepared: PrepareOutcome
    fit: FitResult
    model_val: dict[str, float]
    baselines: dict[str, dict[str, float]]
    model_uri: str | None = None
    registered_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "prepared": str(self.prepared.path),
            "prepared_reused": self.prepared.reused,
            **self.fit.to_json(),
            "validation": {"bert4rec": self.model_val, **self.baselines},
            "model_uri": self.model_uri,
            "registered_version": self.registered_version,
        }

    def summary(self) -> str:
        f = self.fit
        lines = [
            f"trained {f.epochs} epoch(s) in {f.seconds:.1f} s at precision {f.precision}; "
            f"best epoch {f.best_epoch}" + (" (early stopping)" if f.stopped_early else ""),
            *_derived_lines(f.derived),
            f"model bundle: {f.bundle_path}",
            "",
            f"{'validation':<16}{'NDCG@10':>10}{'HR@10':>10}",
        ]
        rows = {"bert4rec": self.model_val, **self.baselines}
        for name, m in rows.items():
            lines.append(
                f"{name:<16}{m.get('ndcg@10', float('nan')):>10.4f}{m.get('hr@10', float('nan')):>10.4f}"
            )
        if self.run_id:
            lines.append(f"\nMLflow run: {self.run_id}")
        if self.model_uri:
            lines.append(f"MLflow model: {self.model_uri}")
        if self.registered_version:
            lines.append(f"registered version: {self.registered_version}")
        return "\n".join(lines)


def _derived_lines(derived: dict[str, Any]) -> list[str]:
    """The schedule and the data-derived settings, as the summary shows them."""
    if not derived:
        return []
    shown = ", ".join(f"{key} {value}" for key, value in derived.items() if value is not None)
    return [f"derived: {shown}"]


def validation_baselines(
    dataset: PreparedDataset, data: TrainingData, batch_size: int = 1024
) -> dict[str, dict[str, float]]:
    """Most-popular and last-item transitions, fitted on the model's training events and scored on its
    validation targets by the same code."""
    scorers = fit_baselines(data.history, dataset.n_items)
    return {
        _SHORT_NAMES.get(name, name): evaluate(
            scorer,
            data.val_history,
            data.val_targets,
            ks=BASELINE_KS,
            n_items=dataset.n_items,
            item_counts=dataset.item_counts(),
            batch_size=batch_size,
        ).metrics
        for name, scorer in scorers.items()
    }


def _model_validation(cfg: RecsysConfig, dataset: PreparedDataset, fitted: FitResult) -> dict[str, float]:
    result = evaluate(
        Recommender(fitted.module.model, dataset.users, dataset.items),
        fitted.data.val_history,
        fitted.data.val_targets,
        ks=BASELINE_KS,
        n_items=dataset.n_items,
        item_counts=dataset.item_counts(),
        batch_size=cfg.eval.batch_size,
        max_history=fitted.config.model.resolved_max_len() - 1,
    )
    return result.metrics


def _facts(cfg: RecsysConfig, result: TrainResult, *, resumed: bool = False) -> TrainFacts:
    f = result.fit
    registered = cfg.tracking.registered_model
    return TrainFacts(
        dataset=dataset_name(cfg),
        model_val=result.model_val,
        baselines=result.baselines,
        best_epoch=f.best_epoch or None,
        epochs=f.epochs,
        max_epochs=f.config.train.max_epochs or f.epochs,  # as trained: a time budget may have set it
        seconds=f.seconds,
        stopped_early=f.stopped_early,
        precision=f.precision,
        resumed=resumed,
        model_name=result.model_uri,
        registered=f"models:/{registered}/{result.registered_version}" if result.registered_version else None,
    )


def _log_results(tracker: Tracker, cfg: RecsysConfig, result: TrainResult) -> None:
    """A few summary metrics, the learning curve against the baselines, the tables as artifacts."""
    if tracker.enabled:
        _log.info(
            "logging validation metrics, baselines and the learning curve to MLflow run %s", tracker.run_id
        )
    tracker.log_metrics(train_summary_metrics(_facts(cfg, result)))
    log_learning_curve(tracker, result.fit.history, baselines=result.baselines)
    tracker.log_dict({"history": result.fit.history}, "history.json")
    tracker.log_dict({"bert4rec": result.model_val, **result.baselines}, "validation.json")


def _log_model(tracker: Tracker, cfg: RecsysConfig, dataset: PreparedDataset, result: TrainResult) -> None:
    """The bundle inside a pyfunc model named ``bert4rec-<dataset>``, registered when configured; its
    page shows the best epoch's metrics."""
    if result.fit.bundle_path is None or not tracker.enabled:
        return
    registered = cfg.tracking.registered_model
    _log.info("logging the model to MLflow%s", f" and registering it as {registered!r}" if registered else "")
    info = log_pyfunc_model(
        tracker,
        result.fit.bundle_path,
        dataset,
        registered_model_name=cfg.tracking.registered_model,
        name=logged_model_name(dataset_name(cfg)),
        step=result.fit.best_epoch,
    )
    if info is not None:
        result.model_uri = info.model_uri
        version = getattr(info, "registered_model_version", None)
        result.registered_version = str(version) if version is not None else None


@contextmanager
def _locked_run(cfg: RecsysConfig, *, resume: bool) -> Iterator[Tracker]:
    """Lock ``train.output_dir``, check a ``--resume`` checkpoint, then open (or continue) the run.

    In that order, so that a busy directory or a missing or mismatched checkpoint is refused before
    any MLflow run is opened or any data is prepared.
    """
    with output_lock(cfg.train.output_dir):
        previous = None
        if resume:
            last = Path(cfg.train.output_dir) / "checkpoints" / "last.ckpt"
            check_resume(cfg, last)  # the data fingerprint is compared by fit, once the data is ready
            previous = recorded_run_id(last)
        name = run_name("train", cfg, detail="resumed" if resume else None)
        with tracked_run(
            cfg, "train", dataset=dataset_name(cfg), run_name=name, resume_run_id=previous
        ) as tracker:
            yield tracker


def _log_data_report(tracker: Tracker, prepared: Path) -> None:
    for name in ("report.json", "seq_length_hist.png"):
        if (prepared / name).is_file():
            tracker.log_artifact(prepared / name, "data")


def run(cfg: RecsysConfig, *, resume: bool = False) -> TrainResult:
    """Prepare the data (reused when unchanged), train, validate against baselines, log to MLflow.

    ``train.output_dir`` is locked for the whole job: a second job on it is refused at once
    (:class:`~recsys.training.lock.OutputDirBusyError`, naming the holder's pid). With ``resume`` the
    checkpoint must exist and match the config, and the MLflow run that wrote it is continued.

    Args:
        cfg: configuration (every section; ``tracking`` says where the run goes).
        resume: continue from ``<train.output_dir>/checkpoints/last.ckpt`` (after a crash or a kill).
    """
    with _locked_run(cfg, resume=resume) as tracker:
        outcome = prepare(cfg.data)
        dataset = PreparedDataset.load(outcome.path)
        tracker.log_input_fingerprint(dataset_fingerprint(dataset), source=cfg.data.source.path)
        _log_data_report(tracker, outcome.path)
        logger = tracker.lightning_logger()
        tcfg = cfg.train
        if tcfg.time_budget_minutes is not None:
            length = f"a schedule fitted to {tcfg.time_budget_minutes:g} min" + (
                f" (at most {tcfg.max_epochs} epochs)" if tcfg.max_epochs else ""
            )
        else:
            length = f"{tcfg.max_epochs or DEFAULT_EPOCHS} epochs"
        _log.info(
            "training for %s on %s users, %s items (%s)",
            length,
            f"{dataset.n_users:,}",
            f"{dataset.n_items:,}",
            "resuming from the last checkpoint" if resume else f"output in {cfg.train.output_dir}",
        )
        # Every checkpoint records the run that wrote it, so that --resume continues that run.
        record = [RunRecord(tracker.run_id)] if tracker.run_id else []
        fitted = fit(
            cfg,
            dataset,
            resume=resume,
            loggers=[logger] if logger else [],
            callbacks=[*record, *tracker.lightning_callbacks()],
        )
        # runtime.precision is logged as configured (auto); this is what it resolved to on this machine.
        tracker.log_params({"precision": fitted.precision})
        # Values set from the data or the time budget (the config's `auto`/null stay logged as given).
        changed = tracker.log_new_params({f"derived.{k}": v for k, v in fitted.derived.items()})
        if changed:  # a resumed run with a new schedule: MLflow keeps the first values, the tag the new
            tracker.set_tags({"resume.changed_derived": "; ".join(changed)})
        _log.info(
            "validating the best epoch (%d) and the baselines on the validation targets", fitted.best_epoch
        )
        result = TrainResult(
            run_id=tracker.run_id,
            prepared=outcome,
            fit=fitted,
            model_val=_model_validation(fitted.config, dataset, fitted),
            baselines=validation_baselines(dataset, fitted.data),
        )
        _log_results(tracker, cfg, result)
        _log_model(tracker, cfg, dataset, result)
        tracker.set_description(train_description(_facts(cfg, result, resumed=resume)))
        return result
