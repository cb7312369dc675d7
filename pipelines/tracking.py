"""MLflow tracking for every pipeline: one run per job, the same shape every time.

``tracked_run`` opens an MLflow run, records what is needed to reproduce it (the resolved config as flat
dotted params and as ``config.yaml``, the git commit, package versions, the dataset) and yields a small
``Tracker``. When ``tracking.enabled`` is false the same ``Tracker`` type does nothing, so pipeline code
never branches on tracking. This is the only module that talks to MLflow directly; ``recsys/`` never
imports it.

Where runs go (``resolve_tracking_uri``): ``tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///mlruns.db`` in the working directory with artifacts in ``./mlartifacts``. The store is probed
(``check_reachable``) before any training starts, so a typo in a server address costs seconds, not an
epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import socket
import subprocess
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode

import recsys
from recsys.config import RecsysConfig, TrackingConfig, flatten, to_yaml

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from pytorch_lightning.loggers import MLFlowLogger

__all__ = [
    "DEFAULT_TRACKING_URI",
    "Tracker",
    "TrackingError",
    "check_reachable",
    "log_learning_curve",
    "metric_name",
    "resolve_tracking_uri",
    "tracked_run",
]

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
"""Used when neither the config nor ``$MLFLOW_TRACKING_URI`` names a store (resolved against the cwd)."""

ARTIFACT_DIR_NAME = "mlartifacts"
"""Artifacts of a SQLite store live in this folder beside the database (as ``mlflow server`` does)."""

PROBE_TIMEOUT_S = 5.0
"""How long ``check_reachable`` waits for a server before giving up."""

_log = logging.getLogger(__name__)

# MLflow's own limits (mlflow.utils.validation); exceeding them fails the whole batch request.
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000
_MAX_PARAMS_TAGS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_MAX_DATASET_DIGEST = 36  # the SQL store's column width for dataset digests

# Package versions recorded as tags: tag suffix -> distribution name.
_VERSIONED_PACKAGES = {
    "torch": "torch",
    "pytorch_lightning": "pytorch-lightning",
    "polars": "polars",
    "mlflow": "mlflow",
    "optuna": "optuna",
}

# The UI shows "Model training" views (not GenAI ones) for experiments tagged like this.
_EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
_EXPERIMENT_KIND = "custom_model_development"

# MLflow accepts only these characters in metric, param and tag names (mlflow.utils.validation).
_INVALID_NAME_CHARS = re.compile(r"[^/\w.\- :]")


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable database, deleted experiment)."""


def metric_name(name: str) -> str:
    """An MLflow-safe metric (or param) name: ``"val_ndcg@10" -> "val_ndcg_at_10"``.

    MLflow rejects '@', which every ranking metric name contains; ``_at_`` is the spelling
    ``recsys.training.module.metric_key`` uses for per-epoch metrics, so final and per-epoch values of the
    same metric line up in the UI. Any other rejected character becomes ``_``.
    """
    return _INVALID_NAME_CHARS.sub("_", name.replace("@", "_at_"))


# ------------------------------------------------------------------------------------------ the store
def resolve_tracking_uri(cfg: TrackingConfig) -> str:
    """The tracking URI a run will use: config, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns.db``.

    A relative SQLite path is made absolute against the current directory: MLflow caches stores by URI
    string, so ``sqlite:///mlruns.db`` seen from two directories would otherwise hit the first database.
    """
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    return _absolute_sqlite_uri(uri)


def _absolute_sqlite_uri(uri: str) -> str:
    path, query = _sqlite_path(uri)
    if path is None or path.is_absolute():
        return uri
    return f"sqlite:///{path.resolve().as_posix()}{query}"


def _sqlite_path(uri: str) -> tuple[Path | None, str]:
    """``(database path, "?query")`` of a ``sqlite:///`` URI; ``(None, "")`` for anything else."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None, ""
    rest, sep, query = uri[len(prefix) :].partition("?")
    if rest in ("", ":memory:"):
        return None, ""
    return Path(rest), sep + query


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast with ``TrackingError`` (naming ``uri``) if runs cannot be written there.

    http(s): one GET of ``/health`` with a short timeout. MLflow's own client retries with backoff for
    minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), which is right mid-run but wrong before training starts.
    Any HTTP answer below 500 counts as reachable (a proxy may not route ``/health``; auth errors surface
    with MLflow's own message on the first call). SQLite: the database's folder must exist and be
    writable. Other database URLs with a host get a TCP connect; anything else is left to MLflow.
    """
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        _probe_http(uri, timeout)
    elif scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme == "file":
        _check_writable_dir(Path(urllib.request.url2pathname(parsed.path)), uri)
    elif parsed.hostname:
        # postgresql://, mysql://, ...: a TCP connect finds a wrong host or port without a driver.
        port = parsed.port or {"postgresql": 5432, "mysql": 3306, "mssql": 1433}.get(scheme.split("+")[0])
        if port is not None:
            try:
                socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            except OSError as exc:
                raise TrackingError(_unreachable(uri, f"{parsed.hostname}:{port}: {exc}")) from None


def _unreachable(uri: str, reason: str) -> str:
    return (
        f"MLflow tracking store {uri} is not reachable ({reason}). Start the server, fix "
        "tracking.tracking_uri / $MLFLOW_TRACKING_URI, or set tracking.enabled=false."
    )


def _probe_http(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            return
        raise TrackingError(_unreachable(uri, f"HTTP {exc.code} from {url}")) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(_unreachable(uri, str(reason))) from None


def _check_sqlite(uri: str) -> None:
    path, _ = _sqlite_path(uri)
    if path is None:
        return
    folder = path.parent
    if not folder.exists():
        raise TrackingError(f"MLflow tracking store {uri}: folder {folder} does not exist.")
    if not folder.is_dir():
        raise TrackingError(f"MLflow tracking store {uri}: {folder} is not a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        # SQLite writes a journal beside the database, so the folder itself must be writable.
        raise TrackingError(f"MLflow tracking store {uri}: folder {folder} is not writable.")
    if path.exists() and (not path.is_file() or not os.access(path, os.R_OK | os.W_OK)):
        raise TrackingError(f"MLflow tracking store {uri}: {path} is not a writable file.")


def _check_writable_dir(path: Path, uri: str) -> None:
    """The nearest existing ancestor must be a writable folder (MLflow creates the rest)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise TrackingError(f"MLflow tracking store {uri}: {existing} is not a writable folder.")


def _ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts beside a SQLite database) if missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        db_path, _ = _sqlite_path(uri)
        artifact_location = None
        if db_path is not None:
            # Without this MLflow would put artifacts under ./mlruns relative to whatever the cwd
            # happens to be; beside the database, the store is one self-contained folder.
            safe_name = re.sub(r"[^\w.-]+", "_", name)
            artifact_location = (db_path.parent / ARTIFACT_DIR_NAME / safe_name).resolve().as_uri()
        try:
            return client.create_experiment(
                name,
                artifact_location=artifact_location,
                tags={_EXPERIMENT_KIND_TAG: _EXPERIMENT_KIND},
            )
        except MlflowException as exc:
            # Another process (a parallel tuning worker) created it between our lookup and create.
            if exc.error_code != ErrorCode.Name(ErrorCode.RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} at {uri} is deleted: restore it "
            f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) or pick another name."
        )
    return str(experiment.experiment_id)


# ------------------------------------------------------------------------------------------ the tracker
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

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (tensors and numpy scalars are converted), optionally at a step."""
        active = self._active()
        if active is None or not metrics:
            return
        client, run_id = active
        now = int(time.time() * 1000)
        entries = [Metric(metric_name(k), float(v), now, step or 0) for k, v in metrics.items()]
        for chunk in _chunks(entries, _MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=chunk)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (values as YAML-readable text); re-logging a key with a different value fails."""
        active = self._active()
        if active is None or not params:
            return
        client, run_id = active
        entries = [Param(metric_name(k), _param_value(v)) for k, v in params.items()]
        for chunk in _chunks(entries, _MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id, params=chunk)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values as text, truncated at MLflow's 8000 characters); tags can be overwritten."""
        active = self._active()
        if active is None or not tags:
            return
        client, run_id = active
        entries = [RunTag(k, _tag_value(v)) for k, v in tags.items()]
        for chunk in _chunks(entries, _MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id, tags=chunk)

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
        a resumed run) and spells metric names with ``metric_name`` instead of dropping the '@'.
        """
        if self._client is None or self._run_id is None:
            return False
        from pipelines.run_logger import RunLogger  # Lightning is slow to import: only when tracking

        return RunLogger(
            experiment_name=self._experiment_name or "Default",
            tracking_uri=self._tracking_uri,
            run_id=self._run_id,
            log_model=False,
        )


# ------------------------------------------------------------------------------------------ run context
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
    # Lightning turns SIGTERM into SIGTERMException, a SystemExit with no code: a killed run, not a
    # finished one (matched by name so that tracking does not import Lightning).
    if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "SIGTERMException":
        return RunStatus.to_string(RunStatus.KILLED)
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return RunStatus.to_string(RunStatus.FINISHED)
    return RunStatus.to_string(RunStatus.FAILED)


def _end_run(client: MlflowClient, run_id: str, status: str) -> None:
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:
        # The body left another run on MLflow's stack (or ended ours): end ours by id, touch nothing else.
        client.set_terminated(run_id, status)


@contextmanager
def tracked_run(
    cfg: RecsysConfig,
    pipeline: str,
    *,
    dataset: str | None,
    run_name: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
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
        run_name: shown in the UI; default ``<pipeline>-<dataset>-<YYYYmmdd-HHMMSS>``.
        nested: start under the currently active run (the fluent MLflow stack of this thread).
        parent_run_id: start under this run; use it from worker threads or processes, where the parent
            is not on the local MLflow stack (Optuna ``n_jobs > 1``).
    """
    if not cfg.tracking.enabled or not _is_global_rank_zero():
        yield Tracker.disabled()
        return

    uri = resolve_tracking_uri(cfg.tracking)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment_id = _ensure_experiment(client, cfg.tracking.experiment, uri)

    tags: dict[str, str] = {"pipeline": pipeline, **_package_tags(), **_git_tags()}
    if dataset is not None:
        tags["dataset"] = dataset
    if run_name is None:
        run_name = "-".join(
            [pipeline, *([dataset] if dataset else []), datetime.now().strftime("%Y%m%d-%H%M%S")]
        )
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        nested=nested or parent_run_id is not None,
        parent_run_id=parent_run_id,
        tags=tags,
    )
    run_id = run.info.run_id
    tracker = Tracker(
        client,
        run_id,
        experiment_id=experiment_id,
        experiment_name=cfg.tracking.experiment,
        tracking_uri=uri,
        dataset=dataset,
    )
    try:
        tracker.log_params(flatten(cfg))
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


# ------------------------------------------------------------------------------------------ plots
def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one metric; epochs without it (validation every n epochs) are skipped."""
    wanted = metric_name(key)
    xs: list[float] = []
    ys: list[float] = []
    for i, record in enumerate(history):
        for k, v in record.items():
            if metric_name(k) == wanted and v is not None and math.isfinite(float(v)):
                xs.append(float(record.get("epoch", i)))
                ys.append(float(v))
                break
    return xs, ys


def log_learning_curve(
    tracker: Tracker,
    history: Sequence[Mapping[str, Any]],
    *,
    loss_key: str = "train_loss",
    metric_keys: Sequence[str] = ("val_ndcg_at_10", "val_hr_at_10"),
    artifact_file: str = "learning_curve.png",
) -> Figure | None:
    """Plot per-epoch training loss and validation metrics side by side and log the PNG.

    ``history`` is one dict per epoch (``recsys.training.fit``'s ``history``: ``epoch``, ``train_loss``,
    ``val_ndcg_at_10``, ...); keys are matched through ``metric_name``, so ``val_ndcg@10`` works too.
    Returns the figure (None when tracking is disabled or the history is empty).
    """
    if not tracker.enabled or not history:
        return None
    # A bare Figure renders with Agg and never touches pyplot's global backend or figure registry.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2)
    xs, ys = _series(history, loss_key)
    loss_ax.plot(xs, ys, marker="o", color="tab:red")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel=loss_key)
    for key in metric_keys:
        mx, my = _series(history, key)
        if mx:
            metric_ax.plot(mx, my, marker="o", label=key)
    metric_ax.set(title="validation", xlabel="epoch")
    if metric_ax.lines:
        metric_ax.legend()
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    tracker.log_figure(fig, artifact_file)
    return fig
