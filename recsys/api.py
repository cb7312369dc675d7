"""The notebook API, in the style of RecTools and scikit-learn::

    from recsys import BERT4Rec

    model = BERT4Rec("configs/demo.yaml").fit(ratings)   # a polars or pandas frame, or a file path
    model.recommend(users=[1, 2], k=10)                  # userId, movieId, score, rank: ORIGINAL ids
    model.recommend(histories=new_events, k=10)          # users the model never saw, from their events
    model.similar_items([1, 356], k=10)                  # movieId, similar_movieId, score, rank
    model.embeddings()                                   # item vectors (``which="users"``: user states)
    model.save("models/demo"); BERT4Rec.load("models/demo")

It runs the library the CLI jobs run: :func:`recsys.data.pipeline.prepare` (into a temporary directory
unless ``work_dir`` is given), :func:`recsys.training.fit.fit` (the training of ``recsys train``) and the
``Recommender`` of ``recsys recommend`` and the MLflow pyfunc model. No MLflow run and no Optuna unless
asked: ``tracking=True`` trains through the train job itself (``recsys.jobs.train.run``: an MLflow run
with the baselines and the logged, optionally registered, pyfunc model).

Columns are the config's (``data.source.columns``): the frame given to :meth:`BERT4Rec.fit` and the
``histories`` frames use them, and so do the frames returned. Results are polars frames, or pandas when
the call's own input (``histories``, ``users``) is pandas, or else when the fitted data was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from recsys import __version__
from recsys.config import ConfigError, RecsysConfig, apply_overrides, load_config, validate_config
from recsys.data.errors import MissingColumnError
from recsys.data.pipeline import prepare
from recsys.data.prepared import PreparedDataset
from recsys.inference.ids import ITEM_ID, SIMILAR_ITEM_ID, TIMESTAMP_ID, USER_ID
from recsys.inference.known import read_known_histories, write_known_histories
from recsys.inference.recommender import EMBEDDING, Recommender
from recsys.io import atomic_dir
from recsys.training.bundle import Bundle, BundleError, load_bundle, save_bundle
from recsys.training.fit import FitResult, fit

__all__ = ["BERT4Rec", "ConfigLike"]

ConfigLike = RecsysConfig | Mapping[str, Any] | str | Path | None
"""A config object, a nested dict (the YAML's shape), a YAML file, or None for the defaults."""
Output = Literal["polars", "pandas"]

_API_FILE = "api.json"
_BUNDLE_DIR = "bundle"
_HISTORIES_FILE = "histories.parquet"
_FORMAT = 1


def resolve_config(
    config: ConfigLike, overrides: Mapping[str, Any] | Sequence[str] | None = None
) -> RecsysConfig:
    """``config`` as a validated :class:`RecsysConfig`, with dotted-key ``overrides`` applied
    (``{"train.max_epochs": 5}`` or ``["train.max_epochs=5"]``, as ``--set`` takes them)."""
    if isinstance(config, RecsysConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = validate_config(dict(config), "the config given to BERT4Rec")
    elif isinstance(config, str | Path):
        cfg = load_config(config)
    elif config is None:
        cfg = validate_config({}, "defaults")
    else:
        raise ConfigError(
            f"config: expected a RecsysConfig, a dict or a YAML path, got {type(config).__name__}"
        )
    if not overrides:
        return cfg
    sets = (
        [f"{key}={json.dumps(value, default=str)}" for key, value in overrides.items()]
        if isinstance(overrides, Mapping)
        else list(overrides)
    )
    return validate_config(apply_overrides(cfg.model_dump(mode="json"), sets), "config + overrides")


def _with(cfg: RecsysConfig, sets: dict[str, Any]) -> RecsysConfig:
    return validate_config(
        apply_overrides(cfg.model_dump(mode="json"), [f"{k}={v}" for k, v in sets.items()])
    )


def _is_pandas(value: Any) -> bool:
    return type(value).__module__.split(".", 1)[0] == "pandas"


class BERT4Rec:
    """BERT4Rec, fitted on an interaction log and asked for recommendations in original ids.

    Args:
        config: a :class:`RecsysConfig`, a nested dict, a YAML file (``configs/demo.yaml``) or None (the
            defaults). ``data.source.columns`` names the user, item and timestamp columns.
        overrides: dotted keys over ``config``: ``{"train.max_epochs": 5}``.
        tracking: track the fit in MLflow (``tracking.*`` of the config) through the train job; off by
            default, so that a notebook needs no tracking store.
        work_dir: keep the prepared data, checkpoints and bundle there (default: a temporary directory,
            removed after :meth:`fit`).
    """

    def __init__(
        self,
        config: ConfigLike = None,
        *,
        overrides: Mapping[str, Any] | Sequence[str] | None = None,
        tracking: bool = False,
        work_dir: str | Path | None = None,
    ) -> None:
        cfg = resolve_config(config, overrides)
        self.tracking = tracking
        self.config = cfg if tracking else _with(cfg, {"tracking.enabled": "false"})
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.fit_result: FitResult | None = None
        """What :meth:`fit` trained: best validation metrics, epochs, history, seconds."""
        self._bundle: Bundle | None = None
        self._recommender: Recommender | None = None
        self._histories: pl.DataFrame | None = None  # known users' events, original ids (saved as is)
        self._output: Output = "polars"

    # ------------------------------------------------------------------------------------- fitting
    @contextmanager
    def _workspace(self) -> Iterator[Path]:
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            yield self.work_dir
            return
        with tempfile.TemporaryDirectory(prefix="recsys-fit-") as tmp:
            yield Path(tmp)

    def _source(self, interactions: Any, work: Path) -> dict[str, Any]:
        """Config keys that point the data section at ``interactions`` (a frame is written as parquet)."""
        if isinstance(interactions, str | os.PathLike):
            return {"data.source.path": json.dumps(str(interactions))}
        if _is_pandas(interactions):
            self._output = "pandas"
            interactions = pl.from_pandas(interactions)
        else:
            self._output = "polars"
        path = work / "interactions.parquet"
        if isinstance(interactions, pl.LazyFrame):
            interactions.sink_parquet(path)
        elif isinstance(interactions, pl.DataFrame):
            interactions.write_parquet(path)
        else:
            raise TypeError(
                f"fit() takes a polars/pandas DataFrame or a path, got {type(interactions).__name__}"
            )
        return {"data.source.path": json.dumps(str(path)), "data.source.format": "parquet"}

    def fit(self, interactions: Any) -> BERT4Rec:
        """Prepare ``interactions`` (clean, k-core, encode, split as configured), train, keep the best
        validation epoch's model. Returns ``self``.

        Args:
            interactions: a polars DataFrame/LazyFrame, a pandas DataFrame, or a path to any file
                ``recsys prepare`` reads (CSV, Parquet, MovieLens, ...).
        """
        with self._workspace() as work:
            sets = self._source(interactions, work)
            sets["data.output_dir"] = json.dumps(str(work / "prepared"))
            sets["train.output_dir"] = json.dumps(str(work / "run"))
            cfg = _with(self.config, sets)
            if self.tracking:
                from recsys.jobs import train

                result = train.run(cfg)
                fitted, prepared_dir = result.fit, result.prepared.path
            else:
                prepared_dir = prepare(cfg.data, plot=False).path
                fitted = fit(cfg, PreparedDataset.load(prepared_dir))
            if fitted.bundle_path is None:
                raise RuntimeError("training wrote no model bundle")
            dataset = PreparedDataset.load(prepared_dir)
            bundle = load_bundle(fitted.bundle_path)  # read into memory: the workspace may go now
            self._use(bundle, write_known_histories(dataset, work / _HISTORIES_FILE))
        self.config = cfg
        self.fit_result = fitted
        return self

    def _use(self, bundle: Bundle, histories: Path) -> None:
        """Serve ``bundle``, its known users' events read from ``histories`` (kept in memory for save)."""
        self._bundle, self._histories = bundle, pl.read_parquet(histories)
        known = read_known_histories(histories, bundle.users, bundle.items)
        self._recommender = Recommender.load(bundle, known=known)

    @property
    def is_fitted(self) -> bool:
        return self._recommender is not None

    def _fitted(self) -> Recommender:
        if self._recommender is None:
            raise RuntimeError("this BERT4Rec is not fitted: call fit(interactions) or BERT4Rec.load(path)")
        return self._recommender

    # ------------------------------------------------------------------------------------- frames
    @property
    def _columns(self) -> tuple[str, str, str | None]:
        columns = self.config.data.source.columns
        return columns.user, columns.item, columns.timestamp

    def _histories_in(self, histories: Any) -> pl.DataFrame | None:
        """A histories frame in the config's columns -> ``user_id, item_id[, timestamp]``."""
        if histories is None:
            return None
        frame = pl.from_pandas(histories) if _is_pandas(histories) else histories
        if not isinstance(frame, pl.DataFrame):
            raise TypeError(
                f"histories: expected a polars or pandas DataFrame, got {type(histories).__name__}"
            )
        user, item, time = self._columns
        for column in (user, item):
            if column not in frame.columns:
                raise MissingColumnError(
                    f"histories has no column {column!r}; its columns are {frame.columns}",
                    column=column,
                    expected=f"the columns the model was fitted with: {user}, {item}[, {time}]",
                )
        renames = {user: USER_ID, item: ITEM_ID, **({time: TIMESTAMP_ID} if time in frame.columns else {})}
        return frame.select(list(renames)).rename(renames)

    def _renamed(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``user_id`` / ``item_id`` / ``similar_item_id`` -> the config's column names."""
        user, item, _ = self._columns
        renames = {USER_ID: user, ITEM_ID: item, SIMILAR_ITEM_ID: f"similar_{item}"}
        return frame.rename({k: v for k, v in renames.items() if k in frame.columns})

    def _out(self, frame: pl.DataFrame, *inputs: Any) -> Any:
        """Renamed; pandas when an input is pandas or, failing any frame input, the fitted data was."""
        frame = self._renamed(frame)
        pandas = any(_is_pandas(value) for value in inputs) or self._output == "pandas"
        return frame.to_pandas() if pandas else frame

    # ------------------------------------------------------------------------------------- queries
    def recommend(
        self,
        users: Any = None,
        *,
        histories: Any = None,
        k: int | None = None,
        exclude_seen: bool | None = None,
    ) -> Any:
        """The top ``k`` items per user, best first: ``<user>, <item>, score, rank`` (original ids).

        Args:
            users: ids of users the model was fitted on (scored from everything it saw of them); None:
                every such user (or, with ``histories``, only the histories' users).
            histories: events of users to score from these events instead (new users, or a fresher
                history of a known one): a frame with the fitted data's user and item columns and,
                optionally, its timestamp column (else row order is time order).
            k: items per user (default ``inference.k``); exclude_seen: never recommend an item of the
                user's history (default ``inference.exclude_seen``).
        """
        recommender = self._fitted()
        k = self.config.inference.k if k is None else k
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        seen = self.config.inference.exclude_seen if exclude_seen is None else exclude_seen
        frame = recommender.recommend(users, histories=self._histories_in(histories), k=k, exclude_seen=seen)
        return self._out(frame, users, histories)

    def similar_items(self, items: Any = None, k: int | None = None) -> Any:
        """The ``k`` nearest items of each of ``items`` (all when None) by cosine of the output item
        embeddings, itself excluded: ``<item>, similar_<item>, score, rank``."""
        k = self.config.inference.k if k is None else k
        return self._out(self._fitted().similar_items(items, k), items)

    def embeddings(
        self,
        which: Literal["items", "users"] = "items",
        *,
        users: Any = None,
        histories: Any = None,
        path: str | Path | None = None,
    ) -> Any:
        """Vectors for downstream models, one row per id with an ``embedding`` column (d floats).

        ``which="items"``: each item's output embedding and ``bias``; the model scores an item for a
        user as ``user_embedding . item_embedding + bias``. ``which="users"``: the model's state after
        each user's history (``users`` / ``histories`` as in :meth:`recommend`). With ``path`` the frame
        is also written there as parquet (atomically).
        """
        recommender = self._fitted()
        if which == "items":
            frame = recommender.item_embeddings()
            bias = recommender.model.output_bias()
            values = np.zeros(len(frame), np.float32) if bias is None else bias.detach()[1:-1].float().numpy()
            frame = frame.with_columns(pl.Series("bias", values))
        elif which == "users":
            frame = recommender.user_embeddings(users, histories=self._histories_in(histories))
        else:
            raise ValueError(f"which must be 'items' or 'users', got {which!r}")
        frame = frame.select([c for c in frame.columns if c != EMBEDDING] + [EMBEDDING])
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            self._renamed(frame).write_parquet(tmp)
            tmp.replace(target)
        return self._out(frame, users, histories)

    # ------------------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to directory ``path`` (replaced atomically): ``bundle/`` (the model
        bundle ``recsys train`` writes, usable by every CLI verb), ``histories.parquet`` (the known
        users' events) and ``api.json``."""
        self._fitted()
        assert self._bundle is not None and self._histories is not None
        target, bundle = Path(path), self._bundle
        extra = {k: v for k, v in bundle.manifest.items() if k in ("best_val", "best_epoch")}
        with atomic_dir(target) as staging:
            save_bundle(
                staging / _BUNDLE_DIR,
                bundle.model,
                bundle.config,
                bundle.users,
                bundle.items,
                bundle.item_counts,
                data_fingerprint=bundle.fingerprint,
                features=bundle.features,
                extra=extra,
            )
            self._histories.write_parquet(staging / _HISTORIES_FILE)
            meta = {"format": _FORMAT, "recsys_version": __version__, "output": self._output}
            (staging / _API_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | Path) -> BERT4Rec:
        """A model written by :meth:`save` (the bundle's checksums are verified)."""
        root = Path(path)
        try:
            meta = json.loads((root / _API_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(f"{root}: no {_API_FILE}; not a model written by BERT4Rec.save") from None
        if meta.get("format") != _FORMAT:
            raise BundleError(f"{root / _API_FILE}: format {meta.get('format')!r}, expected {_FORMAT}")
        bundle = load_bundle(root / _BUNDLE_DIR)
        model = cls(bundle.config)
        model._output = "pandas" if meta.get("output") == "pandas" else "polars"
        model._use(bundle, root / _HISTORIES_FILE)
        return model

    def __repr__(self) -> str:
        m = self.config.model
        shape = f"hidden {m.hidden_size}, {m.n_layers} blocks, max_len {m.max_len}"
        if self._bundle is None:
            return f"BERT4Rec(not fitted; {shape})"
        return f"BERT4Rec({len(self._bundle.users):,} users, {self._bundle.n_items:,} items; {shape})"
