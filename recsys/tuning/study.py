"""The Optuna study: its RDB storage, pruner and sampler, creating or joining it, the first trials, and the
per-trial callback."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError, OperationalError

from recsys.config import ConfigError, RecsysConfig
from recsys.tracking.names import section_metric
from recsys.tuning.objective import TrialContext
from recsys.tuning.space import (
    CategoricalParam,
    FloatParam,
    HyperbandPrunerConfig,
    IntParam,
    MedianPrunerConfig,
    StudyConfig,
    TuneConfig,
    selected_section,
)

__all__ = [
    "OBJECTIVE_NAME",
    "after_trial",
    "create_or_join",
    "enqueue_first_trials",
    "finished_trials",
    "mask_url",
    "open_storage",
]

_log = logging.getLogger(__name__)

OBJECTIVE_NAME = "validation NDCG@10"
"""What the study maximises, as Optuna shows it: the best validation NDCG@10 of a trial's epochs."""

TRIAL_VALUE = section_metric("trials", "val_ndcg@10")
"""The parent run's chart of every complete trial's value (step = trial number)."""

_STORAGE_ATTEMPTS = 4
"""Tries to open the Optuna storage (a fresh database is created by the first worker to get there)."""


# ------------------------------------------------------------------------------------------ the study
def mask_url(url: str) -> str:
    """The storage URL without its password (it goes into logs, tags and JSON)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def open_storage(cfg: StudyConfig) -> optuna.storages.RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if cfg.storage.startswith("sqlite:///"):
        db = cfg.storage.removeprefix("sqlite:///").split("?")[0]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        # Python's sqlite3 gives up on a locked database after 5 s; parallel workers hold write locks
        # briefly but often, and a longer wait is better than a failed trial.
        engine_kwargs["connect_args"] = {"timeout": 60}
    beat = cfg.heartbeat_seconds
    for attempt in range(_STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    cfg.storage,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=beat,
                    grace_period=2 * beat if beat else None,
                )
        except (OperationalError, IntegrityError) as exc:
            if attempt + 1 == _STORAGE_ATTEMPTS:
                raise _storage_error(cfg.storage, exc) from None
            # Workers started together on a fresh database race to create Optuna's tables ("table ...
            # already exists"); by the next attempt the other one has, and the schema check passes.
            time.sleep(1.0 + attempt)
        except Exception as exc:
            raise _storage_error(cfg.storage, exc) from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _storage_error(url: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"study.storage {mask_url(url)}: cannot open the Optuna storage ({type(exc).__name__}: {exc})"
    )


def _pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    p = cfg.pruner
    if isinstance(p, MedianPrunerConfig):
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials,
            # Steps are epochs counted from 1 (PruningCallback); Optuna never prunes step < n_warmup_steps.
            n_warmup_steps=p.n_warmup_steps + 1,
            interval_steps=p.interval_steps,
            n_min_trials=p.n_min_trials,
        )
    if isinstance(p, HyperbandPrunerConfig):
        max_resource = p.max_resource or cfg.max_epochs_per_trial
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=max_resource if max_resource is not None else "auto",
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def _sampler(cfg: StudyConfig, seed: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate: hidden size, heads and lr interact; constant_liar: parallel workers do not all
        # sample the same promising point while its first trial is still running.
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=cfg.n_startup_trials, multivariate=True, constant_liar=True
        )


def create_or_join(storage: optuna.storages.BaseStorage, cfg: StudyConfig) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists (a resumed study, or another worker's).

    Creation is the atomic step (unique study name in the RDB), so exactly one process is the creator;
    it enqueues the first trials and opens the MLflow parent run.
    """
    try:
        study = optuna.create_study(
            storage=storage, study_name=cfg.name, direction=cfg.direction, pruner=_pruner(cfg)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # The objective's name in optuna-dashboard and Optuna's plots (else "Objective Value").
            study.set_metric_names([OBJECTIVE_NAME])
        study.sampler = _sampler(cfg, cfg.seed)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=cfg.name, storage=storage, pruner=_pruner(cfg))
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {cfg.name!r} in {mask_url(cfg.storage)} does not maximise; rename it")
    # A joining or resuming worker with the creator's seed would replay the creator's random start-up
    # points; mix in the study's progress and the process id so each worker explores different ones.
    seed = np.random.SeedSequence([cfg.seed, len(study.trials), os.getpid()]).generate_state(1)[0]
    study.sampler = _sampler(cfg, int(seed))
    return study, False


def _in_range(spec: FloatParam | IntParam | CategoricalParam, value: Any) -> bool:
    if isinstance(spec, CategoricalParam):
        return value in spec.choices
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    if isinstance(spec, IntParam):
        return (
            isinstance(value, int) and spec.low <= value <= spec.high and (value - spec.low) % spec.step == 0
        )
    return spec.low <= value <= spec.high


def enqueue_first_trials(study: optuna.Study, tune: TuneConfig, base: RecsysConfig) -> None:
    """The baseline (the base config's own values for the space's keys), then ``study.enqueue``.

    A base value outside the space is left to the sampler and the trial is marked ``baseline_exact:
    false``; a key that does not apply to the base (``loss.n_negatives`` of a softmax base) is skipped.
    """
    if tune.study.baseline_trial:
        raw = base.model_dump(mode="json")
        params: dict[str, Any] = {}
        exact = True
        for key, spec in tune.space.items():
            *section, leaf = key.split(".")
            model = selected_section(raw, section)
            if model is None or leaf not in model.model_fields:
                continue
            value: Any = raw
            for part in key.split("."):
                value = value[part]
            if _in_range(spec, value):
                params[key] = value
            else:
                exact = False
        study.enqueue_trial(params, user_attrs={"baseline": True, "baseline_exact": exact})
    for entry in tune.study.enqueue:
        study.enqueue_trial(dict(entry))


def after_trial(ctx: TrialContext) -> Any:
    """Optuna callback: count, stop after too many failures in a row, log the value on the parent run."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        ctx.trials_run += 1
        ctx.failures_in_a_row = ctx.failures_in_a_row + 1 if trial.state == TrialState.FAIL else 0
        limit = ctx.tune.study.max_failures_in_a_row
        if limit is not None and ctx.failures_in_a_row >= limit:
            ctx.stopped_reason = f"{limit} trials failed in a row (see the trials' error attributes)"
            _log.error("stopping study %s: %s", study.study_name, ctx.stopped_reason)
            study.stop()
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            try:
                # One point per trial (step = trial number) in the parent run's "trials" section.
                ctx.parent.log_metrics({TRIAL_VALUE: trial.value}, step=trial.number)
            except Exception as exc:  # the parent's chart is a nicety; the study goes on
                _log.warning("could not log trial %d on the parent run: %s", trial.number, exc)

    return callback


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
