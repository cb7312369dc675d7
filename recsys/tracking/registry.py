"""Model URIs -> local bundle directories, so every job takes ``--model models:/name/1`` as well as a path.

Accepted forms:

- a bundle directory (any string that is not an MLflow URI): returned unchanged;
- ``models:/<name>/<version>`` and ``models:/<name>@<alias>``: a Model Registry version;
- ``runs:/<run_id>/model`` (the pyfunc model ``log_pyfunc_model`` logs), ``runs:/<run_id>/bundle`` (the
  bundle ``recsys train`` logs as a plain artifact) and ``models:/<model_id>`` (an MLflow 3 logged model).

Downloads land in a cache, ``$RECSYS_MODEL_CACHE`` or ``$XDG_CACHE_HOME/recsys/models`` (default
``~/.cache/recsys/models``): registry versions under ``<name>/<version>``, other URIs under
``_uri/<hash>``. A registry version never changes, so a cached copy is reused as long as its recorded
origin (registry, source, model id) still matches; an alias is looked up on every call, then cached by
the version it points to. Downloads are staged beside the cache entry and renamed into place, so an
interrupted download never looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, Run
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import is_tracking_uri_set

from recsys.config import TrackingConfig
from recsys.io import create_staging, discard, publish
from recsys.tracking.pyfunc import BUNDLE_ARTIFACT, HISTORIES_ARTIFACT, MODEL_NAME
from recsys.tracking.store import check_reachable, resolve_tracking_uri
from recsys.training.bundle import MANIFEST, BundleError

__all__ = [
    "MODEL_CACHE_ENV",
    "ModelURIError",
    "ResolvedModel",
    "is_model_uri",
    "resolve_model",
    "resolve_model_uri",
]

MODEL_CACHE_ENV: Final = "RECSYS_MODEL_CACHE"
"""Environment variable naming the download cache folder."""

_SOURCE_FILE = "source.json"  # beside the downloaded files: where they came from
_FILES_DIR = "files"
_MLMODEL = "MLmodel"
_PYFUNC = "python_function"
_REGISTRY_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")
_REGISTRY_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)/?$")
_LOGGED_MODEL = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)/?$")
_RUN_PATH = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+?)/?$")


class ModelURIError(BundleError):
    """A model URI that does not resolve to a recsys model bundle (shown as an input error by the CLI)."""


@dataclass(frozen=True)
class ResolvedModel:
    """Local paths of a resolved model.

    Attributes:
        bundle: the model bundle directory (give it to ``load_bundle``).
        histories: the known users' histories file of a pyfunc model (``recsys.tracking.pyfunc``), if any.
    """

    bundle: Path
    histories: Path | None = None


def is_model_uri(uri: str | Path) -> bool:
    """True for ``models:/`` and ``runs:/`` URIs, False for anything else (a local path)."""
    return isinstance(uri, str) and uri.startswith(("models:/", "runs:/"))


def resolve_model_uri(
    uri: str | Path, *, tracking_uri: str | None = None, cache_dir: Path | None = None
) -> Path:
    """The local bundle directory for ``uri`` (downloaded and cached if it is an MLflow URI).

    Args:
        uri: a bundle directory, ``models:/name/version``, ``models:/name@alias`` or ``runs:/id/model``.
        tracking_uri: the MLflow store to ask (also the registry); default the one MLflow was pointed at
            (``mlflow.set_tracking_uri``, as ``tracked_run`` does, or ``$MLFLOW_TRACKING_URI``), else
            recsys's default ``sqlite:///mlruns.db`` in the working directory.
        cache_dir: where downloads go; default ``$RECSYS_MODEL_CACHE`` or ``~/.cache/recsys/models``.

    Raises:
        ModelURIError: the URI names nothing, or something that is not a recsys model; the message names
            the URI and the store.
        TrackingError: the tracking server does not answer.
    """
    return resolve_model(uri, tracking_uri=tracking_uri, cache_dir=cache_dir).bundle


def resolve_model(
    uri: str | Path, *, tracking_uri: str | None = None, cache_dir: Path | None = None
) -> ResolvedModel:
    """Like :func:`resolve_model_uri`, also returning the stored known-user histories when there are any."""
    if not is_model_uri(uri):
        return ResolvedModel(bundle=Path(uri))
    text = str(uri)
    tracking = tracking_uri or _current_tracking_uri()
    # The registry lives in the tracking store unless MLflow was told otherwise.
    registry = tracking_uri or (mlflow.get_registry_uri() if is_tracking_uri_set() else tracking)
    # Fail in seconds on a wrong server address: MLflow's client retries for minutes before giving up.
    check_reachable(registry)
    client = MlflowClient(tracking_uri=tracking, registry_uri=registry)
    root = cache_dir if cache_dir is not None else default_cache_dir()
    try:
        download_uri, entry, origin = _locate(text, client, root, registry)
        model_dir = _cached_download(download_uri, entry, origin, tracking, registry)
    except MlflowException as exc:
        raise ModelURIError(
            f"model {text} cannot be resolved in MLflow store {registry}: {exc.message}"
        ) from None
    return _inspect(model_dir, text)


def _current_tracking_uri() -> str:
    """MLflow's tracking URI if anything set one (``tracked_run``, ``$MLFLOW_TRACKING_URI``), else recsys's
    default store (``sqlite:///mlruns.db`` in the working directory), not MLflow's own (``mlflow.db``)."""
    if is_tracking_uri_set():
        return mlflow.get_tracking_uri()
    return resolve_tracking_uri(TrackingConfig())


def default_cache_dir() -> Path:
    """``$RECSYS_MODEL_CACHE``, else ``$XDG_CACHE_HOME/recsys/models``, else ``~/.cache/recsys/models``."""
    explicit = os.environ.get(MODEL_CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "recsys" / "models"


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name) or "_"


def _locate(uri: str, client: MlflowClient, root: Path, registry: str) -> tuple[str, Path, dict[str, Any]]:
    """(artifact URI to download, cache entry folder, origin record a cached copy must match).

    ``models:/`` URIs are turned into their underlying artifact location here, through ``client``:
    ``mlflow.artifacts.download_artifacts`` would resolve them against MLflow's *global* registry URI,
    whatever ``registry_uri`` it is given.
    """
    by_version = _REGISTRY_VERSION.match(uri)
    by_alias = _REGISTRY_ALIAS.match(uri)
    if by_version or by_alias:
        if by_version:
            name = by_version["name"]
            version = client.get_model_version(name, by_version["version"])
        else:
            assert by_alias is not None
            name = by_alias["name"]
            version = client.get_model_version_by_alias(name, by_alias["alias"])
        origin = {
            "registry": registry,
            "name": name,
            "version": str(version.version),
            "source": version.source,
            "run_id": version.run_id,
        }
        download = client.get_model_version_download_uri(name, str(version.version))
        return download, root / _safe(name) / str(version.version), origin
    logged = _LOGGED_MODEL.match(uri)
    run = _RUN_PATH.match(uri)
    if logged:
        download = client.get_logged_model(logged["model_id"]).artifact_location
    elif run:
        download = _run_artifact_location(client, run["run_id"], run["path"])
    else:
        raise ModelURIError(
            f"model {uri} (MLflow store {registry}): unsupported form; use models:/<name>/<version>, "
            "models:/<name>@<alias>, "
            "models:/<model_id> or runs:/<run_id>/<path>"
        )
    # No version number here: key the cache by store and URI, and check the location still matches (a
    # model logged again into the same run is a new logged model elsewhere).
    digest = hashlib.sha256(f"{registry}\n{uri}".encode()).hexdigest()[:16]
    return download, root / "_uri" / digest, {"registry": registry, "uri": uri, "location": download}


def _run_artifact_location(client: MlflowClient, run_id: str, path: str) -> str:
    """Where ``runs:/<run_id>/<path>`` lives: the run's newest logged model named ``path`` (MLflow 3 keeps
    model artifacts outside the run), else the run's own artifact ``path`` (the plain ``bundle`` one).

    ``runs:/<run_id>/model`` also finds the run's newest model of another name: ``recsys train`` names
    it ``bert4rec-<dataset>``, and ``model`` is the name these URIs have always used.
    """
    run = client.get_run(run_id)
    if "'" not in path:  # a quote cannot be part of a model name filter
        newest = _newest_model(client, run, f"name = '{path}'")
        if newest is None and path == MODEL_NAME:
            newest = _newest_model(client, run, None)
        if newest is not None:
            return str(newest.artifact_location)
    return f"{run.info.artifact_uri.rstrip('/')}/{path}"


def _newest_model(client: MlflowClient, run: Run, filter_string: str | None) -> LoggedModel | None:
    """The newest logged model of ``run`` matching ``filter_string`` (None: any), or None."""
    newest: LoggedModel | None = None
    token: str | None = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'"
            + (f" AND {filter_string}" if filter_string else ""),
            page_token=token,
        )
        for model in page:
            if model.source_run_id == run.info.run_id and (
                newest is None or model.creation_timestamp > newest.creation_timestamp
            ):
                newest = model
        token = page.token
        if not token:
            return newest


def _cached_download(
    download_uri: str, entry: Path, origin: dict[str, Any], tracking: str, registry: str
) -> Path:
    """The downloaded files of ``download_uri`` under ``entry``, downloading only if not cached."""
    cached = _cached(entry, origin)
    if cached is not None:
        return cached
    staging = create_staging(entry)
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=download_uri,
                dst_path=str(staging / _FILES_DIR),
                tracking_uri=tracking,
                registry_uri=registry,
            )
        )
        record = {**origin, "path": local.resolve().relative_to(staging.resolve()).as_posix()}
        (staging / _SOURCE_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        # Another process may have finished the same download meanwhile: keep theirs if it is good.
        cached = _cached(entry, origin)
        if cached is not None:
            discard(staging)
            return cached
        publish(staging, entry)  # a stale copy (the registry was reset, or another store) is replaced
    except BaseException:
        discard(staging)
        raise
    return entry / record["path"]


def _cached(entry: Path, origin: dict[str, Any]) -> Path | None:
    try:
        record = json.loads((entry / _SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    path = entry / str(record.get("path", ""))
    if {k: record.get(k) for k in origin} != origin or not path.exists():
        return None
    return path


def _inspect(model_dir: Path, uri: str) -> ResolvedModel:
    """Find the bundle in a downloaded pyfunc model, or accept a downloaded bundle itself."""
    if (model_dir / _MLMODEL).is_file():
        flavor = Model.load(str(model_dir)).flavors.get(_PYFUNC, {})
        artifacts = flavor.get("artifacts", {})
        if BUNDLE_ARTIFACT not in artifacts:
            raise ModelURIError(
                f"model {uri} is an MLflow model but not a recsys one (no {BUNDLE_ARTIFACT!r} artifact)"
            )
        histories = artifacts.get(HISTORIES_ARTIFACT)
        return ResolvedModel(
            bundle=model_dir / artifacts[BUNDLE_ARTIFACT]["path"],
            histories=model_dir / histories["path"] if histories else None,
        )
    if (model_dir / MANIFEST).is_file():
        return ResolvedModel(bundle=model_dir)
    raise ModelURIError(
        f"model {uri} downloaded to {model_dir} is neither a recsys pyfunc model (no {_MLMODEL}) nor a model "
        f"bundle (no {MANIFEST})"
    )
