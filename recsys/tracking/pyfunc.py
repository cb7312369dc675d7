"""The trained model as an MLflow pyfunc model: ``mlflow.pyfunc.load_model("models:/name/1").predict(df)``.

What a logged model holds (``artifacts/`` inside the MLflow model directory)::

    bundle/             the model bundle exactly as ``recsys train`` wrote it (safetensors, no pickle)
    histories.parquet   known users' histories (:mod:`recsys.inference.known`: every event of the
                        prepared dataset, original ids), what ``recsys recommend`` scores known users from

Nothing is pickled: the model is logged as code (``recsys_model.py``, three lines that build a stateless
``RecsysPyfuncModel()``), and the weights travel as the bundle directory, loaded as a
:class:`~recsys.inference.recommender.Recommender` (checksums verified) in ``load_context``: the object
behind ``recsys recommend``, so both give the same items, ranks and scores.

The logged code imports the installed ``recsys`` package and nothing else of this repository, and the
model's ``requirements.txt`` names it (``recsys==<version>``) with the versions that logged it of torch,
MLflow and the libraries it reads data with (local version labels such as torch's ``+cpu`` stripped: no
index serves them). So it loads wherever those requirements install: ``recsys`` from its wheel
(``pip wheel --no-deps .`` in this repository, then ``pip install --find-links DIR -r requirements.txt``)
or from a private index. ``tests/tracking/test_pyfunc_venv.py`` does exactly that in a fresh venv.
"""

from __future__ import annotations

import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import mlflow
import pandas as pd
import polars as pl
from mlflow.models import Model, ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from recsys.data import columns
from recsys.data.prepared import PreparedDataset
from recsys.inference.ids import ITEM_ID, RANK, SCORE, TIMESTAMP_ID, USER_ID
from recsys.inference.known import write_known_histories
from recsys.inference.recommender import Recommender
from recsys.tracking.names import BUNDLE_TAG
from recsys.tracking.tracker import Tracker
from recsys.training.bundle import BundleError, bundle_sha256, load_bundle

__all__ = [
    "BUNDLE_ARTIFACT",
    "HISTORIES_ARTIFACT",
    "MODEL_NAME",
    "RecsysPyfuncModel",
    "log_pyfunc_model",
    "model_signature",
    "pip_requirements",
    "public_version",
]

MODEL_NAME: Final = "model"
"""Default name of a logged model; ``recsys train`` names it ``bert4rec-<dataset>``
(``recsys.tracking.names.logged_model_name``). recsys resolves ``runs:/<run_id>/model`` to the run's newest
model whatever its name (``recsys.tracking.registry``)."""
BUNDLE_ARTIFACT: Final = "bundle"
"""Key of the bundle directory in ``context.artifacts`` (and in the MLmodel file)."""
HISTORIES_ARTIFACT: Final = "histories"
"""Key of the known users' histories file in ``context.artifacts``."""

DEFAULT_K: Final = 10
DEFAULT_EXCLUDE_SEEN: Final = True

# Distributions the served model imports (pinned to what logged it), recsys first. Listing them skips
# MLflow's requirement inference, which loads the whole model in a subprocess just to watch its imports.
_RUNTIME_PACKAGES = (
    "recsys",
    "mlflow",
    "torch",
    "numpy",
    "pandas",
    "polars",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "safetensors",
)


# ------------------------------------------------------------------------------------------ the model
class RecsysPyfuncModel(PythonModel):
    """Top-k next-item recommendations from a recsys model bundle (a :class:`Recommender`).

    Input (a pandas DataFrame), one of:

    - **user ids**: a ``user_id`` column of users known to the model; their stored histories are used.
    - **histories**: ``user_id``, ``item_id`` rows (optional ``timestamp``; row order otherwise), one per
      event, for users the model has never seen (or to replace a known user's history).

    Ids the model does not know follow the bundle's ``data.unknown_ids`` policy (``error`` by default:
    an :class:`UnknownIdError` naming them; ``drop``: left out, with a warning), as in ``recsys recommend``.

    Params: ``k`` (default 10) and ``exclude_seen`` (default True).

    Output: ``user_id``, ``item_id`` (original ids), ``score`` (double), ``rank`` (long, 1 = best), up to
    ``k`` rows per user, users in the order they first appear in the input. Slots nothing can fill (fewer
    than ``k`` unseen items) are left out, as ``recsys recommend`` leaves them out.
    """

    def __init__(self) -> None:
        # Filled by load_context: the logged model itself carries no state.
        self._recommender: Recommender | None = None

    def load_context(self, context: PythonModelContext) -> None:
        """Load the bundle (verifying its checksums) and the known users' histories."""
        self._recommender = Recommender.load(
            context.artifacts[BUNDLE_ARTIFACT], known=Path(context.artifacts[HISTORIES_ARTIFACT])
        )

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Recommend ``k`` items per user of ``model_input`` (see the class docstring for the shapes)."""
        if self._recommender is None:
            raise RuntimeError("RecsysPyfuncModel.predict before load_context; load it with mlflow.pyfunc")
        params = params or {}
        k = int(params.get("k", DEFAULT_K))
        exclude_seen = bool(params.get("exclude_seen", DEFAULT_EXCLUDE_SEEN))
        if USER_ID not in model_input.columns:
            raise ValueError(f"model input needs a {USER_ID!r} column; got {list(model_input.columns)}")
        if ITEM_ID in model_input.columns:
            columns_in = [c for c in (USER_ID, ITEM_ID, TIMESTAMP_ID) if c in model_input.columns]
            frame = self._recommender.recommend(
                histories=pl.from_pandas(model_input[columns_in]), k=k, exclude_seen=exclude_seen
            )
        else:
            users = pl.from_pandas(model_input[[USER_ID]])[USER_ID]
            frame = self._recommender.recommend(users, k=k, exclude_seen=exclude_seen)
        return frame.with_columns(pl.col(SCORE).cast(pl.Float64), pl.col(RANK).cast(pl.Int64)).to_pandas()


# ------------------------------------------------------------------------------------------ logging
def _mlflow_type(dtype: pl.DataType) -> str:
    """The MLflow column type for a polars dtype: ``long``, ``double`` or ``string``."""
    if dtype.is_integer():
        return "long"
    if dtype.is_float():
        return "double"
    return "string"


def model_signature(dataset: PreparedDataset) -> ModelSignature:
    """Input, output and params schema, typed like the dataset's ids and timestamps.

    MLflow refuses int64 input for a ``double`` column (and floats for ``long``), so ``timestamp`` takes the
    type of the prepared data's timestamps: ``long`` for integer times, ``double`` for fractional ones.
    """
    user_type = _mlflow_type(dataset.users.ids.dtype)
    item_type = _mlflow_type(dataset.items.ids.dtype)
    time_type = _mlflow_type(dataset.interactions().collect_schema()[columns.TIMESTAMP])
    inputs = Schema(
        [
            ColSpec(user_type, USER_ID),
            ColSpec(item_type, ITEM_ID, required=False),
            ColSpec(time_type, TIMESTAMP_ID, required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(user_type, USER_ID),
            ColSpec(item_type, ITEM_ID),
            ColSpec("double", SCORE),
            ColSpec("long", RANK),
        ]
    )
    params = ParamSchema(
        [ParamSpec("k", "long", DEFAULT_K), ParamSpec("exclude_seen", "boolean", DEFAULT_EXCLUDE_SEEN)]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


_MODEL_CODE = """\
# The recsys pyfunc model, logged as code (see recsys/tracking/pyfunc.py).
import mlflow

from recsys.tracking.pyfunc import RecsysPyfuncModel

mlflow.models.set_model(RecsysPyfuncModel())
"""


def public_version(version: str) -> str:
    """``version`` without its PEP 440 local label (``2.13.0+cpu`` -> ``2.13.0``): a requirement with a
    local label matches only that build, which no public index serves, while ``torch==2.13.0`` takes
    whichever 2.13.0 build the serving machine's index has (the CPU build here, a CUDA one elsewhere)."""
    return version.split("+", 1)[0]


def pip_requirements() -> list[str]:
    """The logged model's requirements: ``name==version`` of each runtime package as installed here."""
    pins = []
    for name in _RUNTIME_PACKAGES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            pins.append(name)
            continue
        pins.append(f"{name}=={public_version(version)}")
    return pins


def _target_run(tracker_or_run_id: Tracker | str) -> str | None:
    """The run to log into (None for a disabled tracker), with MLflow's fluent store pointed at it."""
    if not isinstance(tracker_or_run_id, Tracker):
        return tracker_or_run_id
    if not tracker_or_run_id.enabled or tracker_or_run_id.run_id is None:
        return None
    uri = tracker_or_run_id.tracking_uri
    if uri is not None and uri != mlflow.get_tracking_uri():
        # Model logging goes through MLflow's fluent (global) store; point it at the tracker's.
        mlflow.set_tracking_uri(uri)
    return tracker_or_run_id.run_id


def log_pyfunc_model(
    tracker_or_run_id: Tracker | str,
    bundle_path: Path,
    dataset: PreparedDataset,
    *,
    registered_model_name: str | None = None,
    name: str = MODEL_NAME,
    step: int = 0,
    tags: dict[str, str] | None = None,
) -> ModelInfo | None:
    """Log the bundle as pyfunc model ``name`` in a run and optionally register a new version.

    Args:
        tracker_or_run_id: the training run's ``Tracker`` (a disabled one logs nothing and returns None),
            or an MLflow run id in the current tracking store.
        bundle_path: the bundle ``fit`` wrote.
        dataset: the prepared dataset the bundle was trained on (its vocabularies must match the bundle's);
            all its events become the known users' histories.
        registered_model_name: register the logged model as a new version of this registered model.
        name: the logged model's name (shown in the UI; no '/', ':', '.', '%' or quotes).
        step: the run's metrics at this step become the model's (MLflow copies them): the best epoch's
            validation values rather than step 0's.
        tags: tags of the logged model (it is always tagged ``recsys.bundle_sha256``, as is the run).

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``, ...), or None when disabled.
    """
    run_id = _target_run(tracker_or_run_id)
    if run_id is None:
        return None
    bundle = load_bundle(bundle_path)  # verifies checksums before anything is uploaded
    # Lets `recsys evaluate` find the run (and model) of any copy of this bundle.
    tags = {BUNDLE_TAG: bundle_sha256(bundle), **(tags or {})}
    if bundle.users != dataset.users or bundle.items != dataset.items:
        raise BundleError(
            f"{bundle_path}: its vocabularies differ from the prepared dataset {dataset.path}; log the model "
            "with the dataset it was trained on"
        )
    with tempfile.TemporaryDirectory(prefix="recsys-pyfunc-") as tmp:
        histories = write_known_histories(dataset, Path(tmp) / "histories.parquet")
        # "Models from code": the logged model holds this tiny script instead of a pickled object, so
        # loading it unpickles nothing at all.
        code = Path(tmp) / "recsys_model.py"
        code.write_text(_MODEL_CODE, encoding="utf-8")
        kwargs: dict[str, Any] = {
            "name": name,
            "step": step,
            "python_model": str(code),
            "artifacts": {BUNDLE_ARTIFACT: str(bundle.path), HISTORIES_ARTIFACT: str(histories)},
            "signature": model_signature(dataset),
            # One known user: shown in the UI and checked by MLflow (load + predict) before upload.
            "input_example": pd.DataFrame({USER_ID: dataset.users.ids.head(1).to_list()}),
            "pip_requirements": pip_requirements(),
            "registered_model_name": registered_model_name,
            "metadata": {"recsys.bundle_fingerprint": bundle.fingerprint, "recsys.n_items": bundle.n_items},
        }
        mlflow.MlflowClient().set_tag(run_id, BUNDLE_TAG, tags[BUNDLE_TAG])
        return _log_model(run_id, kwargs, tags)


def _log_model(run_id: str, kwargs: dict[str, Any], tags: dict[str, str]) -> ModelInfo:
    """``mlflow.pyfunc.log_model(**kwargs)`` into run ``run_id``, active or not, tagged ``tags``."""
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        return mlflow.pyfunc.log_model(**kwargs, tags=tags)
    # Not the active run (logging later, or from another thread): mlflow.pyfunc.log_model has no run
    # argument, and Model.log, which it wraps, would file the model under the *current* experiment
    # (Default). So create the logged model in the run's experiment first, then fill it.
    experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    model = mlflow.initialize_logged_model(
        kwargs["name"], source_run_id=run_id, experiment_id=experiment_id, tags=tags
    )
    return Model.log(
        artifact_path=None, flavor=mlflow.pyfunc, run_id=run_id, model_id=model.model_id, **kwargs
    )
