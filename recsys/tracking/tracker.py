"""``Tracker``: logging into one MLflow run, a no-op when tracking is disabled.

Pipeline code calls it unconditionally and never branches on tracking. Made by
:func:`recsys.tracking.run.tracked_run`. MLflow is imported only by a tracker that logs, so a job with
tracking off never pays for importing it (seconds, cold).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recsys.tracking.names import metric_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from pytorch_lightning.callbacks import Callback
    from pytorch_lightning.loggers import MLFlowLogger

__all__ = ["NOTE_TAG", "Tracker"]

NOTE_TAG = "mlflow.note.content"
"""The tag the MLflow UI shows as a run's description (markdown)."""

# MLflow's own limits (mlflow.utils.validation); exceeding them fails the whole batch request.
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000
_MAX_PARAMS_TAGS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_DATASET_DIGEST = 36  # the SQL store's column width for dataset digests


def _param_value(value: Any) -> str:
    """Params as YAML-readable text (``null``, ``true``, ``[1, 5]``), so a value pastes into ``--set``."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _MAX_PARAM_VALUE else text[: _MAX_PARAM_VALUE - 14] + "...[truncated]"


def _tag_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_TAG_VALUE else text[: _MAX_TAG_VALUE - 14] + "...[truncated]"


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Tracker:
    """Logging into one MLflow run; every method does nothing when tracking is disabled.

    Made by ``tracked_run``; pipelines call it unconditionally. Metric and param names go through
    ``metric_name`` (MLflow rejects '@').
    """

    def __init__(
        self,
        client: MlflowClient | None = None,
        run_id: str | None = None,
        *,
        experiment_id: str | None = None,
        experiment_name: str | None = None,
        tracking_uri: str | None = None,
        dataset: str | None = None,
    ) -> None:
        self._client = client
        self._run_id = run_id
        self._experiment_id = experiment_id
        self._experiment_name = experiment_name
        self._tracking_uri = tracking_uri
        self._dataset = dataset

    @classmethod
    def disabled(cls) -> Tracker:
        """A tracker that records nothing (``tracking.enabled: false``)."""
        return cls()

    @property
    def enabled(self) -> bool:
        """Whether calls reach MLflow."""
        return self._client is not None

    @property
    def client(self) -> MlflowClient | None:
        """The MLflow client of the run's store; None when tracking is disabled."""
        return self._client

    @property
    def run_id(self) -> str | None:
        """The MLflow run id; None when tracking is disabled."""
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        """The MLflow experiment id; None when tracking is disabled."""
        return self._experiment_id

    @property
    def tracking_uri(self) -> str | None:
        """The resolved tracking URI; None when tracking is disabled."""
        return self._tracking_uri

    @property
    def run_url(self) -> str | None:
        """Link to the run in the MLflow UI when the store is an http(s) server, else None."""
        if self._tracking_uri is None or not self._tracking_uri.startswith(("http://", "https://")):
            return None
        return f"{self._tracking_uri.rstrip('/')}/#/experiments/{self._experiment_id}/runs/{self._run_id}"

    def _active(self) -> tuple[MlflowClient, str] | None:
        if self._client is None or self._run_id is None:
            return None
        return self._client, self._run_id

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, *, model_id: str | None = None
    ) -> None:
        """Log numeric metrics (tensors and numpy scalars are converted), optionally at a step.

        With ``model_id`` (an MLflow 3 logged model of this run) they are also the model's metrics, shown
        on its page.
        """
        active = self._active()
        if active is None or not metrics:
            return
        from mlflow.entities import Metric

        client, run_id = active
        now = int(time.time() * 1000)
        entries = [
            Metric(metric_name(k), float(v), now, step or 0, model_id=model_id) for k, v in metrics.items()
        ]
        for chunk in _chunks(entries, _MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=chunk)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (values as YAML-readable text); re-logging a key with a different value fails."""
        active = self._active()
        if active is None or not params:
            return
        from mlflow.entities import Param

        client, run_id = active
        entries = [Param(metric_name(k), _param_value(v)) for k, v in params.items()]
        for chunk in _chunks(entries, _MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id, params=chunk)

    def log_new_params(self, params: Mapping[str, Any]) -> list[str]:
        """On a resumed run: log the params the run does not have yet; MLflow forbids changing a logged
        value, so return ``"key: old -> new"`` for each one that differs instead."""
        active = self._active()
        if active is None or not params:
            return []
        client, run_id = active
        logged = client.get_run(run_id).data.params
        fresh: dict[str, Any] = {}
        changed: list[str] = []
        for key, value in params.items():
            old = logged.get(metric_name(key))
            if old is None:
                fresh[key] = value
            elif old != _param_value(value):
                changed.append(f"{key}: {old} -> {_param_value(value)}")
        self.log_params(fresh)
        return changed

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values as text, truncated at MLflow's 8000 characters); tags can be overwritten."""
        active = self._active()
        if active is None or not tags:
            return
        from mlflow.entities import RunTag

        client, run_id = active
        entries = [RunTag(k, _tag_value(v)) for k, v in tags.items()]
        for chunk in _chunks(entries, _MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id, tags=chunk)

    def set_description(self, markdown: str) -> None:
        """The run's description (the ``mlflow.note.content`` tag), shown at the top of its page."""
        self.set_tags({NOTE_TAG: markdown})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under ``artifact_path`` in the run."""
        active = self._active()
        if active is None:
            return
        client, run_id = active
        local = Path(path)
        if local.is_dir():
            client.log_artifacts(run_id, str(local), artifact_path)
        elif local.is_file():
            client.log_artifact(run_id, str(local), artifact_path)
        else:
            raise FileNotFoundError(f"artifact to log not found: {local}")

    def log_dict(self, obj: dict[str, Any], artifact_file: str) -> None:
        """Store a dict as JSON or YAML (chosen by ``artifact_file``'s extension)."""
        active = self._active()
        if active is not None:
            active[0].log_dict(active[1], obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store text as ``artifact_file``."""
        active = self._active()
        if active is not None:
            active[0].log_text(active[1], text, artifact_file)

    def log_figure(self, figure: Figure, artifact_file: str) -> None:
        """Store a matplotlib figure as an image (``.png``) in the run."""
        active = self._active()
        if active is not None:
            active[0].log_figure(active[1], figure, artifact_file)

    def log_output(
        self,
        prefix: str,
        values: Mapping[str, Any],
        manifest: dict[str, Any],
        *,
        description: str | None = None,
    ) -> None:
        """A batch job's numeric results as ``<prefix>.<key>`` metrics, its manifest as an artifact and,
        when given, the run's description (markdown)."""
        self.log_metrics({f"{prefix}.{k}": v for k, v in values.items() if isinstance(v, int | float)})
        self.log_dict(manifest, "manifest.json")
        if description is not None:
            self.set_description(description)

    def log_input_fingerprint(
        self, fp: str, *, source: str | Path | None = None, context: str = "train"
    ) -> None:
        """Record which prepared dataset the run read.

        The full fingerprint goes into the ``dataset.fingerprint`` tag (searchable:
        ``tags."dataset.fingerprint" = '…'``); it is also logged as an MLflow dataset input (name =
        the run's dataset, digest = the first 36 characters) so the UI lists it under "Datasets".
        """
        active = self._active()
        if active is None:
            return
        client, run_id = active
        self.set_tags({"dataset.fingerprint": fp})

        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        # The entity directly: MLflow's Dataset classes want a loadable source, we only record identity.
        name = self._dataset or "dataset"
        where = str(source) if source is not None else name
        dataset = Dataset(
            name=name,
            digest=fp[:_MAX_DATASET_DIGEST],
            source_type="local",
            source=json.dumps({"uri": where}),
        )
        entry = DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
        client.log_inputs(run_id, datasets=[entry])

    def lightning_logger(self) -> MLFlowLogger | Literal[False]:
        """A Lightning ``MLFlowLogger`` writing into this run, or ``False`` (no logger) when disabled.

        Pass it straight to ``Trainer(logger=...)``. Unlike a plain ``MLFlowLogger`` it leaves the run
        open when ``fit`` ends (the run belongs to ``tracked_run``), skips ``log_hyperparams`` (the full
        config is already logged as params; module hparams would repeat it under other names and clash on
        a resumed run) and names metrics by section (``train/loss``, ``val/ndcg_at_10``; see
        ``recsys.tracking.names``).
        """
        if self._client is None or self._run_id is None:
            return False
        from recsys.tracking.run_logger import RunLogger  # Lightning is slow to import: only when tracking

        return RunLogger(
            experiment_name=self._experiment_name or "Default",
            tracking_uri=self._tracking_uri,
            run_id=self._run_id,
            log_model=False,
        )

    def lightning_callbacks(self) -> list[Callback]:
        """Callbacks that log into this run beside the logger (``val/best_ndcg_at_10``, ``system/*``, per
        epoch; see ``recsys.tracking.epoch_metrics``); none when disabled."""
        if not self.enabled:
            return []
        from recsys.tracking.epoch_metrics import BestSoFar, SystemMetrics  # Lightning: only when tracking

        return [BestSoFar(), SystemMetrics()]
