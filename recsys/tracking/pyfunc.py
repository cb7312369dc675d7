"""The trained model as an MLflow pyfunc model: ``mlflow.pyfunc.load_model("models:/name/1").predict(df)``.

What a logged model holds (``artifacts/`` inside the MLflow model directory)::

    bundle/             the model bundle exactly as ``recsys train`` wrote it (safetensors, no pickle)
    histories.parquet   known users' histories: ``user_id``, ``item_id`` (ORIGINAL ids), ``position``

The bundle has no interactions, so scoring a known user by id needs their history from somewhere:
``histories.parquet`` holds EVERY event of the prepared dataset (train + validation + test, in the
dataset's chronological order), which is what ``recsys recommend`` scores known users from: production
recommendations follow the latest event, not a held-out split. One row per event, ``position`` 0, 1, ...
oldest first within a user. Ids are stored as original ids rather than indices so that the file reads on
its own and is re-encoded with the bundle's vocabulary on load.

Nothing is pickled: the model is logged as code (``recsys_model.py``, three lines that build a stateless
``RecsysPyfuncModel()``), and the weights travel as the bundle directory, loaded with ``load_bundle``
(checksums verified) in ``load_context``. Recommendations come from
``recsys.inference.recommend.topk_batches``, the function
behind ``recsys recommend``, so both give the same items, ranks and scores. Loading needs the ``recsys``
package importable (it is not on PyPI: install it from this repository where the model is served).
"""

from __future__ import annotations

import logging
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

import mlflow
import numpy as np
import pandas as pd
import polars as pl
from mlflow.models import Model, ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from recsys.data import columns
from recsys.data.errors import UnknownIdError
from recsys.data.prepared import PreparedDataset
from recsys.data.sequences import Sequences
from recsys.inference.recommend import (
    ITEM_ID,
    TIMESTAMP_ID,
    USER_ID,
    encode_known,
    histories_from_frame,
    select_rows,
    topk_batches,
)
from recsys.tracking.tracker import Tracker
from recsys.training.bundle import Bundle, BundleError, load_bundle

__all__ = [
    "BUNDLE_ARTIFACT",
    "HISTORIES_ARTIFACT",
    "MODEL_NAME",
    "RecsysPyfuncModel",
    "known_histories",
    "load_known_histories",
    "log_pyfunc_model",
    "model_signature",
    "write_known_histories",
]

MODEL_NAME: Final = "model"
"""Name of the logged model in the run (``runs:/<run_id>/model``)."""
BUNDLE_ARTIFACT: Final = "bundle"
"""Key of the bundle directory in ``context.artifacts`` (and in the MLmodel file)."""
HISTORIES_ARTIFACT: Final = "histories"
"""Key of the known users' histories file in ``context.artifacts``."""

# Column names of the model's output beyond the ids (the same as ``recsys recommend`` writes).
SCORE: Final = "score"
RANK: Final = "rank"
POSITION: Final = "position"
"""Order of an event within its user's history in ``histories.parquet`` (0 = oldest)."""

_log = logging.getLogger(__name__)

# Recommendations in index space, one row per (history row, rank), before ids are decoded.
_ROW = "row"
_LONG_SCHEMA: Final = pl.Schema({_ROW: pl.Int64, ITEM_ID: pl.Int64, SCORE: pl.Float64, RANK: pl.Int64})
_EMPTY_LONG: Final = pl.DataFrame(schema=_LONG_SCHEMA)

DEFAULT_K: Final = 10
DEFAULT_EXCLUDE_SEEN: Final = True

# Distributions the served model imports (pinned to what logged it). Listing them skips MLflow's
# requirement inference, which loads the whole model in a subprocess just to watch its imports.
_RUNTIME_PACKAGES = (
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


# ------------------------------------------------------------------------------------------ histories
def known_histories(dataset: PreparedDataset) -> Sequences:
    """Every event of every user (train + validation + test), as ``recsys recommend`` scores known users."""
    return dataset.all_events()


def write_known_histories(dataset: PreparedDataset, path: Path) -> Path:
    """Write :func:`known_histories` with original ids to ``path`` (parquet: user_id, item_id, position)."""
    seqs = known_histories(dataset)
    row_users = seqs.row_users()
    # Position within the user's sequence: global row number minus the sequence's first row.
    position = np.arange(len(seqs.items), dtype=np.int64) - np.repeat(seqs.offsets[:-1], seqs.lengths())
    frame = pl.DataFrame(
        {
            USER_ID: pl.Series(USER_ID, dataset.users.decode(row_users), dtype=dataset.users.ids.dtype),
            ITEM_ID: pl.Series(ITEM_ID, dataset.items.decode(seqs.items), dtype=dataset.items.ids.dtype),
            POSITION: pl.Series(POSITION, position, dtype=pl.Int32),
        }
    )
    frame.write_parquet(path)
    return path


def load_known_histories(path: Path, bundle: Bundle) -> Sequences:
    """Read a file written by :func:`write_known_histories` into ``Sequences`` for every bundle user.

    Users without events get an empty sequence, so ``result.users == arange(len(bundle.users))``.
    """
    frame = pl.read_parquet(path, columns=[USER_ID, ITEM_ID, POSITION])
    users, _ = bundle.users.encode(frame[USER_ID])
    items, _ = bundle.items.encode(frame[ITEM_ID])
    # Sort by (user, position) rather than trusting the file's row order.
    order = np.lexsort((frame[POSITION].to_numpy(), users))
    return Sequences.from_sorted(users[order], items[order], n_users=len(bundle.users))


# ------------------------------------------------------------------------------------------ the model
class RecsysPyfuncModel(PythonModel):
    """Top-k next-item recommendations from a recsys model bundle.

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
        self._bundle: Bundle | None = None
        self._known: Sequences | None = None

    def load_context(self, context: PythonModelContext) -> None:
        """Load the bundle (verifying its checksums) and the known users' histories."""
        self._bundle = load_bundle(context.artifacts[BUNDLE_ARTIFACT])
        self._known = load_known_histories(Path(context.artifacts[HISTORIES_ARTIFACT]), self._bundle)

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Recommend ``k`` items per user of ``model_input`` (see the class docstring for the shapes)."""
        if self._bundle is None or self._known is None:
            raise RuntimeError("RecsysPyfuncModel.predict before load_context; load it with mlflow.pyfunc")
        params = params or {}
        k = int(params.get("k", DEFAULT_K))
        exclude_seen = bool(params.get("exclude_seen", DEFAULT_EXCLUDE_SEEN))
        if USER_ID not in model_input.columns:
            raise ValueError(f"model input needs a {USER_ID!r} column; got {list(model_input.columns)}")
        if ITEM_ID in model_input.columns:
            columns_in = [c for c in (USER_ID, ITEM_ID, TIMESTAMP_ID) if c in model_input.columns]
            frame = pl.from_pandas(model_input[columns_in])
            histories, ids, n_unknown_items = histories_from_frame(frame, self._bundle, unknown=self._policy)
            if n_unknown_items:
                _log.warning("dropped %d history event(s) with items unknown to the model", n_unknown_items)
            row_ids = pl.Series(USER_ID, ids, dtype=frame[USER_ID].dtype)
        else:
            histories, row_ids = self._known_users(pl.from_pandas(model_input[[USER_ID]])[USER_ID])
        return self._recommend(histories, row_ids, k=k, exclude_seen=exclude_seen).to_pandas()

    @property
    def _policy(self) -> Literal["error", "drop"]:
        assert self._bundle is not None
        return self._bundle.config.data.unknown_ids

    def _known_users(self, user_ids: pl.Series) -> tuple[Sequences, pl.Series]:
        """Stored histories of known users, one row per distinct id in input order, and those ids."""
        assert self._bundle is not None and self._known is not None
        vocab = self._bundle.users
        requested = user_ids.unique(maintain_order=True)
        index = encode_known(vocab, requested)
        unknown = index < 0
        if unknown.any():
            examples = requested.filter(pl.Series(unknown)).head(5).to_list()
            if self._policy == "error":
                raise UnknownIdError(
                    f"{int(unknown.sum())} user id(s) unknown to this model, e.g. {examples}; it knows the "
                    f"{len(vocab)} users it was trained on",
                    column=USER_ID,
                    expected=f"known user ids, or ({USER_ID}, {ITEM_ID}) history rows for new users",
                )
            _log.warning("dropped %d user id(s) unknown to the model, e.g. %s", int(unknown.sum()), examples)
            index = index[~unknown]
        # The stored histories hold every user 0..n_users-1 in order, so a user's row is its index.
        return select_rows(self._known, index), vocab.ids.gather(index - vocab.offset).rename(USER_ID)

    def _recommend(
        self, histories: Sequences, row_ids: pl.Series, *, k: int, exclude_seen: bool
    ) -> pl.DataFrame:
        """``topk_batches`` over ``histories`` (rows 0..n-1, named by ``row_ids``), with original ids."""
        assert self._bundle is not None
        bundle = self._bundle
        parts = [_EMPTY_LONG]
        for block in topk_batches(
            bundle.model,
            histories,
            k,
            exclude_seen=exclude_seen,
            batch_size=bundle.config.inference.batch_size,
        ):
            row, item, score, rank = block.to_long()  # PAD slots (nothing left to recommend) left out
            parts.append(
                pl.DataFrame({_ROW: row, ITEM_ID: item, SCORE: score, RANK: rank}).cast(_LONG_SCHEMA)
            )
        # Batches come in history-length order; rows are numbered in input order, so sort back.
        long = pl.concat(parts).sort(_ROW, RANK)
        items = bundle.items
        return pl.DataFrame(
            {
                USER_ID: row_ids.gather(long[_ROW]),
                ITEM_ID: items.ids.gather(long[ITEM_ID] - items.offset).rename(ITEM_ID),
                SCORE: long[SCORE],
                RANK: long[RANK],
            }
        )


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


def _pip_requirements() -> list[str]:
    pins = []
    for name in _RUNTIME_PACKAGES:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def log_pyfunc_model(
    tracker_or_run_id: Tracker | str,
    bundle_path: Path,
    dataset: PreparedDataset,
    *,
    registered_model_name: str | None = None,
) -> ModelInfo | None:
    """Log the bundle as pyfunc model ``model`` in a run and optionally register a new version.

    Args:
        tracker_or_run_id: the training run's ``Tracker`` (a disabled one logs nothing and returns None),
            or an MLflow run id in the current tracking store.
        bundle_path: the bundle ``fit`` wrote.
        dataset: the prepared dataset the bundle was trained on (its vocabularies must match the bundle's);
            all its events become the known users' histories.
        registered_model_name: register the logged model as a new version of this registered model.

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``, ...), or None when disabled.
    """
    if isinstance(tracker_or_run_id, Tracker):
        if not tracker_or_run_id.enabled or tracker_or_run_id.run_id is None:
            return None
        run_id = tracker_or_run_id.run_id
        uri = tracker_or_run_id.tracking_uri
        if uri is not None and uri != mlflow.get_tracking_uri():
            # Model logging goes through MLflow's fluent (global) store; point it at the tracker's.
            mlflow.set_tracking_uri(uri)
    else:
        run_id = tracker_or_run_id

    bundle = load_bundle(bundle_path)  # verifies checksums before anything is uploaded
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
            "name": MODEL_NAME,
            "python_model": str(code),
            "artifacts": {BUNDLE_ARTIFACT: str(bundle.path), HISTORIES_ARTIFACT: str(histories)},
            "signature": model_signature(dataset),
            # One known user: shown in the UI and checked by MLflow (load + predict) before upload.
            "input_example": pd.DataFrame({USER_ID: dataset.users.ids.head(1).to_list()}),
            "pip_requirements": _pip_requirements(),
            "registered_model_name": registered_model_name,
            "metadata": {"recsys.bundle_fingerprint": bundle.fingerprint, "recsys.n_items": bundle.n_items},
        }
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            return mlflow.pyfunc.log_model(**kwargs)
        # Not the active run (logging later, or from another thread): mlflow.pyfunc.log_model has no run
        # argument, and Model.log, which it wraps, would file the model under the *current* experiment
        # (Default). So create the logged model in the run's experiment first, then fill it.
        experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
        model = mlflow.initialize_logged_model(MODEL_NAME, source_run_id=run_id, experiment_id=experiment_id)
        return Model.log(
            artifact_path=None, flavor=mlflow.pyfunc, run_id=run_id, model_id=model.model_id, **kwargs
        )
