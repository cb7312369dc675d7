"""The ``tune`` job: an Optuna study over a YAML search space, every trial trained by ``fit``.

A tune file names a base recsys config, overrides for it, the study settings and the search space::

    base: ../demo.yaml                 # relative to this file, else to the working directory
    overrides: {train.output_dir: runs/tune/demo}
    study: {name: demo, storage: "sqlite:///optuna.db", seed: 42, n_trials: 20,
            max_epochs_per_trial: 10, pruner: {kind: median, n_startup_trials: 4, n_warmup_steps: 2}}
    space:
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.n_layers: {type: int, low: 1, high: 3}
      loss.kind: {type: categorical, choices: [softmax, gbce]}

One search-space function (:func:`suggest_config`: trial → validated ``RecsysConfig``) and one training
function (``recsys.training.fit.fit``, the one ``recsys train`` runs). Each trial trains in
``<train.output_dir>/trials/<number>`` without writing a bundle; validation NDCG@10 is reported every
epoch and weak trials are pruned (:class:`PruningCallback`). The study lives in an RDB storage (SQLite by
default): rerunning an interrupted study resumes it, and several processes pointed at one storage work on
the same study. MLflow gets one parent run per study and a nested run per trial. At the end the best
trial's config is written as ``<train.output_dir>/best.yaml``, ready for ``recsys train``, beside plots of
the study.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from recsys.config import DataConfig
from recsys.data.pipeline import PrepareOutcome, prepare
from recsys.data.prepared import PreparedDataset
from recsys.tracking.names import dataset_name
from recsys.tracking.store import check_reachable, resolve_tracking_uri
from recsys.tuning.objective import TrialContext, objective
from recsys.tuning.parent import parent_run
from recsys.tuning.report import TuneResult, finish
from recsys.tuning.study import (
    after_trial,
    create_or_join,
    enqueue_first_trials,
    finished_trials,
    mask_url,
    open_storage,
)
from recsys.tuning.tune_file import load_tune_config

__all__ = ["TuneResult", "run"]


def _prepare_shared(cfg: DataConfig) -> PrepareOutcome:
    """Prepare (or reuse) the dataset once, even when several workers start at the same moment.

    Without the lock two fresh workers would both build it and swap directories under each other.
    """
    target = Path(cfg.output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock, prepare is still atomic
        return prepare(cfg)
    with (target.parent / f".{target.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            return prepare(cfg)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(
    config_path: str | Path,
    *,
    overrides: list[str] | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
) -> TuneResult:
    """Run (or resume, or join) the study of a tune file until it holds ``n_trials`` finished trials.

    Complete and pruned trials already in the storage count; failed ones (crashes, interruptions) do
    not, so a rerun replaces them. With several workers on one storage each stops once the study is
    full (a worker's trial in flight at that moment may overshoot by one). Crashing trials are recorded as
    failed and the study goes on; NaN metrics and invalid combinations are pruned.

    Args:
        config_path: the tune YAML file.
        overrides: ``--set`` strings: ``study.*``/``space.*``/... change the tune file, other keys the base.
        n_trials: overrides ``study.n_trials``.
        timeout: overrides ``study.timeout`` (seconds; no trial starts after it, a running one finishes).
    """
    started = time.perf_counter()
    sets = list(overrides or [])
    if n_trials is not None:
        sets.append(f"study.n_trials={n_trials}")
    if timeout is not None:
        sets.append(f"study.timeout={timeout}")
    tune, base = load_tune_config(config_path, sets)
    if base.tracking.enabled:
        check_reachable(resolve_tracking_uri(base.tracking))  # before the study exists, not after
    outcome = _prepare_shared(base.data)
    dataset = PreparedDataset.load(outcome.path)
    label = dataset_name(base)
    study, created = create_or_join(open_storage(tune.study), tune.study)
    if created:
        enqueue_first_trials(study, tune, base)
    with parent_run(base, tune, study, dataset, created=created) as parent:
        parent.set_tags(
            {
                "optuna.study": study.study_name,
                "optuna.storage": mask_url(tune.study.storage),
                "optuna.n_trials": tune.study.n_trials,
            }
        )
        ctx = TrialContext(tune=tune, base=base, dataset=dataset, dataset_label=label, parent=parent)
        remaining = tune.study.n_trials - finished_trials(study)
        if remaining > 0:
            study.optimize(
                lambda trial: objective(trial, ctx),
                n_trials=remaining,
                timeout=tune.study.timeout,
                catch=(Exception,),
                callbacks=[
                    optuna.study.MaxTrialsCallback(
                        tune.study.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED)
                    ),
                    after_trial(ctx),
                ],
                gc_after_trial=True,
            )
        return finish(study, ctx, time.perf_counter() - started)
