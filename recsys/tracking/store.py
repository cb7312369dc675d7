"""Where runs go and whether that store can be used, checked before any work starts.

``resolve_tracking_uri``: ``tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///mlruns.db`` in the working directory with artifacts in ``./mlartifacts``. The store is probed
(``check_reachable``) before any training starts, so a typo in a server address costs seconds, not an
epoch.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode

from recsys.config import TrackingConfig

__all__ = [
    "ARTIFACT_DIR_NAME",
    "DEFAULT_TRACKING_URI",
    "PROBE_TIMEOUT_S",
    "TrackingError",
    "check_reachable",
    "ensure_experiment",
    "resolve_tracking_uri",
]

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
"""Used when neither the config nor ``$MLFLOW_TRACKING_URI`` names a store (resolved against the cwd)."""

ARTIFACT_DIR_NAME = "mlartifacts"
"""Artifacts of a SQLite store live in this folder beside the database (as ``mlflow server`` does)."""

PROBE_TIMEOUT_S = 5.0
"""How long ``check_reachable`` waits for a server before giving up."""

# The UI shows "Model training" views (not GenAI ones) for experiments tagged like this.
_EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
_EXPERIMENT_KIND = "custom_model_development"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable database, deleted experiment)."""


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

    http(s): one read-only MLflow API call with a short timeout. MLflow's own client retries with backoff
    for minutes (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), which is right mid-run but wrong before training
    starts. The answer must be MLflow's JSON (found or not found), so a web server that is not MLflow (a
    wrong port, a proxy's landing page) is named at once; 401/403 pass (auth errors surface with MLflow's
    own message on the first call). SQLite: the database's folder must exist and be
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


_PROBE_PATH = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
"""One read-only MLflow REST call: a tracking server answers it with JSON, found or not."""


def _probe_http(uri: str, timeout: float) -> None:
    """The server must answer an MLflow API call like MLflow: any web server answers ``/health``."""
    url = uri.rstrip("/") + _PROBE_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, kind, body = response.status, response.headers.get_content_type(), response.read(65536)
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise TrackingError(_unreachable(uri, f"HTTP {exc.code} from {url}")) from None
        if exc.code in (401, 403):
            return  # an MLflow server behind auth: MLflow's own client reports the credentials problem
        status, kind, body = exc.code, exc.headers.get_content_type(), exc.read(65536)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(_unreachable(uri, str(reason))) from None
    if not _mlflow_answer(body):
        raise TrackingError(
            f"{uri} answers HTTP but is not an MLflow tracking server (GET {_PROBE_PATH.split('?')[0]} "
            f"gave HTTP {status}, {kind}, not MLflow's JSON). Point tracking.tracking_uri / "
            "$MLFLOW_TRACKING_URI at the MLflow server itself (e.g. http://host:5000), or set "
            "tracking.enabled=false."
        )


def _mlflow_answer(body: bytes) -> bool:
    """An MLflow REST answer: a JSON object with the experiment, or with MLflow's ``error_code``."""
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and ("experiment" in answer or "error_code" in answer)


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


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
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
