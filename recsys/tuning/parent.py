"""The study's one MLflow parent run: opened by the creator, re-attached by resumes and other workers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
import yaml

from recsys.config import RecsysConfig
from recsys.data.fingerprint import dataset_fingerprint
from recsys.data.prepared import PreparedDataset
from recsys.tracking.names import dataset_name, run_name
from recsys.tracking.run import tracked_run
from recsys.tracking.store import resolve_tracking_uri
from recsys.tracking.tracker import Tracker
from recsys.tuning.space import TuneConfig

__all__ = ["SETUP_ATTR", "parent_run"]

_log = logging.getLogger(__name__)

SETUP_ATTR = "recsys.setup"
"""Study user attribute the creating process writes once the study is ready (with the parent run id)."""

_JOIN_WAIT_S = 60.0
"""How long a worker joining a fresh study waits for its creator to open the MLflow parent run."""


# ------------------------------------------------------------------------------------------ MLflow parent
@contextmanager
def parent_run(
    base: RecsysConfig,
    tune: TuneConfig,
    study: optuna.Study,
    dataset: PreparedDataset,
    *,
    created: bool,
) -> Iterator[Tracker]:
    """The study's one MLflow parent run: opened by the creator, re-attached by resumes and workers."""
    if not base.tracking.enabled:
        if created:
            study.set_user_attr(SETUP_ATTR, {"parent_run_id": None})
        yield Tracker.disabled()
        return
    uri = resolve_tracking_uri(base.tracking)
    label = dataset_name(base)
    if not created:
        setup = _wait_for_setup(study)
        parent_id = setup.get("parent_run_id")
        if parent_id and setup.get("tracking_uri") == uri:
            with _attached_run(base, parent_id, label) as tracker:
                if tracker is not None:
                    yield tracker
                    return
        _log.warning(
            "study %s has no usable MLflow parent run in %s; opening a new one", study.study_name, uri
        )
    name = run_name("tune", base, detail=f"study {study.study_name}")
    with tracked_run(base, "tune", dataset=label, run_name=name) as tracker:
        study.set_user_attr(SETUP_ATTR, {"parent_run_id": tracker.run_id, "tracking_uri": uri})
        tracker.log_input_fingerprint(dataset_fingerprint(dataset), source=base.data.source.path)
        tracker.log_text(yaml.safe_dump(tune.model_dump(mode="json"), sort_keys=False), "tune.yaml")
        yield tracker


def _wait_for_setup(study: optuna.Study) -> dict[str, Any]:
    """The creator's setup record; a worker started with it may have to wait a few seconds for it."""
    deadline = time.monotonic() + _JOIN_WAIT_S
    while True:
        setup = study.user_attrs.get(SETUP_ATTR)
        if isinstance(setup, dict):
            return setup
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.5)


@contextmanager
def _attached_run(base: RecsysConfig, run_id: str, label: str) -> Iterator[Tracker | None]:
    """A ``Tracker`` on an existing run (set RUNNING while this worker works), or None if it is gone.

    ``tracked_run`` only opens new runs; a resumed study or a second worker must log into the run the
    creator opened, so this reopens it by id with the client.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(base.tracking)
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        run = None
    if run is None or run.info.lifecycle_stage == "deleted":
        yield None
        return
    client.update_run(run_id, status="RUNNING")
    tracker = Tracker(
        client,
        run_id,
        experiment_id=run.info.experiment_id,
        experiment_name=base.tracking.experiment,
        tracking_uri=uri,
        dataset=label,
    )
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            client.set_terminated(run_id, status)
        except MlflowException as exc:
            _log.warning("could not end MLflow run %s: %s", run_id, exc)
