"""``tracked_run``: one MLflow run per job, the same shape every time.

It opens a run, records what is needed to reproduce it (the resolved config as flat dotted params and as
``config.yaml``, the git commit, package versions, the dataset) and yields a :class:`Tracker`. When
``tracking.enabled`` is false the same ``Tracker`` type does nothing (and MLflow is not even imported).
Only ``recsys.jobs``, ``recsys.tracking`` and ``recsys.tuning`` talk to MLflow; the core packages never
import it.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import recsys
from recsys.config import RecsysConfig, flatten, to_yaml
from recsys.tracking.names import run_name as default_run_name
from recsys.tracking.tracker import Tracker

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

__all__ = ["tracked_run"]

_log = logging.getLogger(__name__)

# Package versions recorded as tags: tag suffix -> distribution name.
_VERSIONED_PACKAGES = {
    "torch": "torch",
    "pytorch_lightning": "pytorch-lightning",
    "polars": "polars",
    "mlflow": "mlflow",
    "optuna": "optuna",
}


def _package_tags() -> dict[str, str]:
    tags = {"recsys.version": recsys.__version__, "version.python": platform.python_version()}
    for tag, dist in _VERSIONED_PACKAGES.items():
        try:
            tags[f"version.{tag}"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return tags


def _git_tags() -> dict[str, str]:
    """Commit and dirty flag of the checkout recsys runs from; empty outside a git checkout."""
    root = Path(recsys.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        # Untracked files (data, runs) do not change the code that ran, so they do not count as dirty.
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git.commit": commit, "git.dirty": str(dirty).lower(), "mlflow.source.git.commit": commit}


def _is_global_rank_zero() -> bool:
    """False in the extra processes of a distributed job (Lightning DDP re-runs the script per rank).

    Without this every rank would open its own run. Same variables Lightning reads, plus ``NODE_RANK``
    (local rank 0 on a second node is not rank 0).
    """
    for var in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(var)
        if value is not None and value.strip() not in ("", "0"):
            return False
    return True


_ERROR_TAGS = ("error.type", "error.message", "error.traceback_tail")


def _record_error(tracker: Tracker, exc: BaseException) -> None:
    """Put the error on the run (tags + ``error.txt``) without ever hiding the original exception."""
    try:
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        full = "".join(lines)
        tracker.set_tags(
            {
                "error.type": type(exc).__qualname__,
                "error.message": str(exc)[:2000],
                "error.traceback_tail": full[-3000:],
            }
        )
        tracker.log_text(full, "error.txt")
    except Exception as log_exc:  # the store may be what failed; the body's error matters more
        _log.warning("could not record the error on MLflow run %s: %s", tracker.run_id, log_exc)


def _status_for(exc: BaseException) -> str:
    from mlflow.entities import RunStatus

    # Lightning turns SIGTERM into SIGTERMException, a SystemExit with no code: a killed run, not a
    # finished one (matched by name so that tracking does not import Lightning).
    if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "SIGTERMException":
        return RunStatus.to_string(RunStatus.KILLED)
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return RunStatus.to_string(RunStatus.FINISHED)
    return RunStatus.to_string(RunStatus.FAILED)


def _end_run(client: MlflowClient, run_id: str, status: str) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:
        # The body left another run on MLflow's stack (or ended ours): end ours by id, touch nothing else.
        client.set_terminated(run_id, status)


def _resumable(client: MlflowClient, run_id: str, experiment_id: str) -> Run | None:
    """The run to continue, if it exists in this store and experiment and is not deleted."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        return None
    return run


def _continue(client: MlflowClient, tracker: Tracker, previous: Run, params: dict[str, object]) -> None:
    """Params and tags of a resumed run: new params logged, changed ones and the old error as tags."""
    changed = tracker.log_new_params(params)
    tags: dict[str, str] = {}
    if changed:
        tags["resume.changed_params"] = "; ".join(changed)
    error = previous.data.tags.get("error.message")
    if error is not None:
        tags["resume.previous_error"] = f"{previous.data.tags.get('error.type', 'error')}: {error}"
        for key in _ERROR_TAGS:
            if key in previous.data.tags:
                client.delete_tag(previous.info.run_id, key)
    tracker.set_tags(tags)


def _open(
    cfg: RecsysConfig,
    pipeline: str,
    dataset: str | None,
    run_name: str | None,
    nested: bool,
    parent_run_id: str | None,
    resume_run_id: str | None,
) -> tuple[MlflowClient, Tracker, Run | None]:
    """Check the store, then start the run (a new one, or the one to resume: returned as well)."""
    import mlflow
    from mlflow import MlflowClient

    from recsys.tracking.store import check_reachable, ensure_experiment, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, cfg.tracking.experiment, uri)

    tags: dict[str, str] = {"pipeline": pipeline, **_package_tags(), **_git_tags()}
    if dataset is not None:
        tags["dataset"] = dataset
    if run_name is None:
        run_name = default_run_name(pipeline, cfg)
    previous = _resumable(client, resume_run_id, experiment_id) if resume_run_id else None
    if previous is not None:
        # The continued run takes the new name too: ``train demo.yaml (resumed)``.
        run = mlflow.start_run(
            run_id=previous.info.run_id, run_name=run_name, tags={**tags, "resumed": "true"}
        )
    else:
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            nested=nested or parent_run_id is not None,
            parent_run_id=parent_run_id,
            tags={**tags, **({"resumed_from": resume_run_id} if resume_run_id else {})},
        )
    tracker = Tracker(
        client,
        run.info.run_id,
        experiment_id=experiment_id,
        experiment_name=cfg.tracking.experiment,
        tracking_uri=uri,
        dataset=dataset,
    )
    return client, tracker, previous


@contextmanager
def tracked_run(
    cfg: RecsysConfig,
    pipeline: str,
    *,
    dataset: str | None,
    run_name: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[Tracker]:
    """Run the body inside an MLflow run and yield its ``Tracker`` (a no-op one if tracking is disabled).

    The store is checked first (``TrackingError`` before any work). The run gets the flat config as
    params, ``config.yaml``, and tags ``pipeline``, ``dataset``, ``recsys.version``, ``git.commit``,
    ``git.dirty`` and ``version.*``. If the body raises, the run ends FAILED (KILLED on Ctrl-C) with the
    error in ``error.*`` tags and ``error.txt``, and the exception propagates. In the non-zero ranks of a
    distributed job the tracker is a no-op (rank 0's Lightning logger already carries their metrics).

    Args:
        cfg: the resolved configuration; ``cfg.tracking`` says where and whether to track.
        pipeline: the job's name (``train``, ``evaluate``, ``tune``...), tagged ``pipeline``.
        dataset: a short dataset name (tagged ``dataset``), or None.
        run_name: shown in the UI; default ``<pipeline> <config file>`` (``train demo.yaml``; the dataset
            when the config came from no file), see ``recsys.tracking.names.run_name``.
        nested: start under the currently active run (the fluent MLflow stack of this thread).
        parent_run_id: start under this run; use it from worker threads or processes, where the parent
            is not on the local MLflow stack (Optuna ``n_jobs > 1``).
        resume_run_id: continue this run (``train --resume``) when it is in this store's experiment:
            tagged ``resumed``, params it lacks are logged (changed ones listed in the tag
            ``resume.changed_params``, MLflow cannot change them) and the previous attempt's ``error.*``
            tags become ``resume.previous_error``. Otherwise a new run tagged ``resumed_from``.
    """
    if not cfg.tracking.enabled or not _is_global_rank_zero():
        yield Tracker.disabled()
        return

    from mlflow.entities import RunStatus

    client, tracker, previous = _open(cfg, pipeline, dataset, run_name, nested, parent_run_id, resume_run_id)
    run_id = tracker.run_id
    assert run_id is not None
    try:
        if previous is None:
            tracker.log_params(flatten(cfg))
        else:
            _continue(client, tracker, previous, flatten(cfg))
        tracker.log_text(to_yaml(cfg), "config.yaml")
        yield tracker
    except BaseException as exc:
        status = _status_for(exc)
        if status != RunStatus.to_string(RunStatus.FINISHED):
            _record_error(tracker, exc)
        try:
            _end_run(client, run_id, status)
        except Exception as end_exc:
            _log.warning("could not end MLflow run %s as %s: %s", run_id, status, end_exc)
        raise
    _end_run(client, run_id, RunStatus.to_string(RunStatus.FINISHED))
