"""Which training run made a model bundle, and the evaluation linked back to it.

``recsys train`` tags its run and its logged model with the SHA-256 of the bundle's manifest
(``recsys.bundle_sha256``; the manifest hashes every bundle file). ``recsys evaluate`` hashes the bundle it
was given, whatever form it came in (a folder, ``models:/name/1``, ``runs:/id/model``), and finds the
newest logged model with that tag in the store, hence the training run. The evaluate run is then:

- tagged ``recsys.training_run_id`` (and ``recsys.training_model_id``), with the id as param
  ``training_run_id``, and nested under the training run when both are in one experiment;
- described with a link to it;

and the model's test metrics are logged on the training run as ``test/*``, attached to its logged model
(MLflow 3 model metrics, shown on the model's page), with the result added to the run's description.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from recsys.tracking.names import BUNDLE_TAG, TEST, TRAINING_RUN_TAG, section_metric
from recsys.tracking.summary import with_test_result
from recsys.tracking.tracker import NOTE_TAG, Tracker

__all__ = ["TrainingRun", "find_training_run", "link_evaluation", "log_test_on_training_run"]

_log = logging.getLogger(__name__)

_PARENT_TAG = "mlflow.parentRunId"
_MODEL_TAG = "recsys.training_model_id"


@dataclass(frozen=True)
class TrainingRun:
    """The run that trained a model, and the model it logged."""

    run_id: str
    experiment_id: str
    run_name: str
    model_id: str | None

    @property
    def link(self) -> str:
        """A markdown link to the run page (relative: it works on any MLflow server)."""
        return f"[{self.run_name}](#/experiments/{self.experiment_id}/runs/{self.run_id})"


def find_training_run(tracker: Tracker, bundle_sha256: str) -> TrainingRun | None:
    """The training run (and logged model) of the bundle with this manifest hash; None when the store
    has none (an untracked training, another store) or tracking is off."""
    client = tracker.client
    if client is None:
        return None
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        models = client.search_logged_models(
            experiment_ids=experiments,
            filter_string=f"tags.`{BUNDLE_TAG}` = '{bundle_sha256}'",
            max_results=1,
            order_by=[{"field_name": "creation_timestamp", "ascending": False}],
        )
        model = models[0] if models else None
        if model is None or model.source_run_id is None:
            return None
        run = client.get_run(model.source_run_id)
    except MlflowException as exc:  # a link is a convenience: never fail an evaluation over it
        _log.warning("could not look up the training run of this model: %s", exc)
        return None
    return TrainingRun(
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        run_name=run.info.run_name or run.info.run_id,
        model_id=model.model_id,
    )


def link_evaluation(tracker: Tracker, training: TrainingRun) -> None:
    """Tag (and param) the evaluate run with its training run; nest it there when in the same experiment."""
    tags = {TRAINING_RUN_TAG: training.run_id}
    if training.model_id is not None:
        tags[_MODEL_TAG] = training.model_id
    if training.experiment_id == tracker.experiment_id:
        tags[_PARENT_TAG] = training.run_id
    tracker.set_tags(tags)
    tracker.log_params({"training_run_id": training.run_id})


def log_test_on_training_run(
    tracker: Tracker, training: TrainingRun, model_test: Mapping[str, float], run_name: str
) -> None:
    """The model's test metrics as ``test/*`` on the training run and its logged model, and the result in
    the training run's description (with a link back to the evaluate run ``tracker``)."""
    client = tracker.client
    if client is None or tracker.run_id is None:
        return
    on_training = Tracker(
        client, training.run_id, experiment_id=training.experiment_id, tracking_uri=tracker.tracking_uri
    )
    on_training.log_metrics(
        {section_metric(TEST, k): v for k, v in model_test.items()}, model_id=training.model_id
    )
    description = client.get_run(training.run_id).data.tags.get(NOTE_TAG, "")
    link = f"[{run_name}](#/experiments/{tracker.experiment_id}/runs/{tracker.run_id})"
    on_training.set_description(with_test_result(description, model_test, link))
