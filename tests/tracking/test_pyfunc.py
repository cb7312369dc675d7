"""The MLflow pyfunc model and model URIs, against a real ``mlflow server`` and a local SQLite store.

The promise under test: ``mlflow.pyfunc.load_model("models:/name/1").predict(...)``, in a fresh process,
gives exactly the recommendations the bundle's ``Recommender`` ranks (index space, decoded here by hand).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch
from mlflow import MlflowClient
from mlflow.pyfunc import PyFuncModel

from recsys.config import RecsysConfig, load_config
from recsys.data.errors import UnknownIdError
from recsys.data.prepared import PreparedDataset
from recsys.data.sequences import Sequences
from recsys.inference.ids import histories_from_frame
from recsys.inference.recommender import Recommender
from recsys.jobs import recommend
from recsys.tracking.pyfunc import RecsysPyfuncModel, log_pyfunc_model, model_signature
from recsys.tracking.registry import MODEL_CACHE_ENV, ModelURIError, resolve_model, resolve_model_uri
from recsys.tracking.run import tracked_run
from recsys.tracking.tracker import Tracker
from recsys.training.bundle import Bundle, load_bundle
from recsys.training.fit import fit
from tests.training.helpers import planted_rule_log, prepared, tiny_config

K = 5
NEW_USER = "new-user"
NEW_HISTORY = [3, 4, 5, 6, 7]


@pytest.fixture(scope="module", autouse=True)
def _scratch_cwd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run in an empty folder (model cache too) and check it stays free of MLflow's default ``mlflow.db``.

    Every call here names its store; MLflow resolving a ``models:/`` URI against its global default
    instead (which it does inside ``download_artifacts``) would create that file.
    """
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv(MODEL_CACHE_ENV, str(cwd / "model-cache"))  # never the user's ~/.cache
        yield
    assert not (cwd / "mlflow.db").exists(), "something used MLflow's default store instead of the given one"


@dataclass
class Trained:
    cfg: RecsysConfig
    dataset: PreparedDataset
    bundle_path: Path
    bundle: Bundle


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A tiny model fitted on the planted-cycle log (two epochs: these tests need a model, not a good one)."""
    tmp = tmp_path_factory.mktemp("pyfunc")
    cfg = tiny_config(
        tmp, planted_rule_log(tmp / "log.csv", n_users=60, n_items=40), **{"train.max_epochs": 2}
    )
    dataset = prepared(cfg)
    bundle_path = fit(cfg, dataset).bundle_path
    assert bundle_path is not None
    return Trained(cfg, dataset, bundle_path, load_bundle(bundle_path))


def tracking_cfg(uri: str, model_name: str) -> RecsysConfig:
    return load_config(
        None,
        [
            f"tracking.tracking_uri={uri}",
            f"tracking.experiment=pyfunc-{uuid.uuid4().hex[:8]}",
            f"tracking.registered_model={model_name}",
        ],
    )


@contextmanager
def using_store(uri: str) -> Iterator[None]:
    """MLflow's global store set to ``uri`` for a block only (module fixtures outlive the autouse reset)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None = back to the default


@dataclass
class Logged:
    name: str
    run_id: str
    tracking_uri: str
    model_uri: str


def log_and_register(trained: Trained, uri: str) -> Logged:
    """One training-like run that logs the model and registers it as version 1 of a fresh name."""
    name = f"recsys-{uuid.uuid4().hex[:8]}"
    with using_store(uri), tracked_run(tracking_cfg(uri, name), "train", dataset="planted") as tracker:
        info = log_pyfunc_model(tracker, trained.bundle_path, trained.dataset, registered_model_name=name)
        assert info is not None and tracker.run_id and tracker.tracking_uri
        assert str(info.registered_model_version) == "1"
        return Logged(name, tracker.run_id, tracker.tracking_uri, info.model_uri)


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> str:
    """A local SQLite store (artifacts beside it), shared by this module's tests."""
    path = tmp_path_factory.mktemp("pyfunc_store") / "mlruns.db"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def registered_sqlite(trained: Trained, sqlite_uri: str) -> Logged:
    """The model logged and registered in the local SQLite store (no server: the fast tests use this)."""
    return log_and_register(trained, sqlite_uri)


@pytest.fixture(scope="module")
def registered(trained: Trained, mlflow_server: str, registered_sqlite: Logged) -> dict[str, Logged]:
    """The model logged and registered once per store: the loopback server and local SQLite."""
    return {"server": log_and_register(trained, mlflow_server), "sqlite": registered_sqlite}


@pytest.fixture(scope="module")
def loaded(registered_sqlite: Logged) -> PyFuncModel:
    """The SQLite store's registered version, loaded in this process."""
    logged = registered_sqlite
    with using_store(logged.tracking_uri):
        return mlflow.pyfunc.load_model(f"models:/{logged.name}/1")


# ------------------------------------------------------------------------------------------ the truth
def all_events(dataset: PreparedDataset) -> Sequences:
    """Every event per user in the prepared order: what ``recsys recommend`` scores known users by."""
    frame = dataset.interactions().select("user", "item").collect()
    return Sequences.from_sorted(frame["user"].to_numpy(), frame["item"].to_numpy(), n_users=dataset.n_users)


def expected(
    bundle: Bundle, histories: Any, row_ids: np.ndarray, *, k: int, exclude_seen: bool
) -> pd.DataFrame:
    """Recommendations straight from ``Recommender.topk``, decoded by hand (PAD: nothing left to rank)."""
    rows: list[tuple[Any, Any, float, int]] = []
    for block in Recommender.load(bundle).topk(histories, k, exclude_seen=exclude_seen):
        for user, items, scores in zip(block.users, block.items, block.scores, strict=True):
            user_id = row_ids[int(np.searchsorted(histories.users, user))]
            for rank, (item, score) in enumerate(zip(items, scores, strict=True), start=1):
                if item != 0:
                    rows.append((user_id, bundle.items.decode([item])[0], float(score), rank))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "score", "rank"])


def expected_known(
    trained: Trained, user_ids: list[str], *, k: int = K, exclude_seen: bool = True
) -> pd.DataFrame:
    history = all_events(trained.dataset)
    idx, _ = trained.bundle.users.encode(user_ids)
    users = np.sort(idx)
    seqs = [history.for_user(int(u)) for u in users]
    subset = Sequences.from_sorted(np.repeat(users, [len(s) for s in seqs]), np.concatenate(seqs))
    return expected(
        trained.bundle, subset, trained.bundle.users.decode(subset.users), k=k, exclude_seen=exclude_seen
    )


def new_user_frame() -> pd.DataFrame:
    # Deliberately not in time order: the timestamp column must decide the order.
    return pd.DataFrame(
        {
            "user_id": [NEW_USER] * len(NEW_HISTORY),
            "item_id": NEW_HISTORY[::-1],
            "timestamp": list(range(len(NEW_HISTORY)))[::-1],
        }
    )


def expected_new(trained: Trained, *, k: int = K) -> pd.DataFrame:
    frame = pl.from_pandas(new_user_frame())
    seqs, ids, _ = histories_from_frame(frame, trained.bundle.items, unknown="error")
    return expected(trained.bundle, seqs, ids.to_numpy(), k=k, exclude_seen=True)


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same users, items and ranks; scores within 1e-6."""
    assert list(got.columns) == ["user_id", "item_id", "score", "rank"]
    key = ["user_id", "rank"]
    got = got.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    assert got["user_id"].tolist() == want["user_id"].tolist()
    assert got["rank"].tolist() == want["rank"].tolist()
    assert got["item_id"].tolist() == want["item_id"].tolist()
    np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------ fresh process
_FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    import mlflow, pandas as pd
    for model_job in json.loads(sys.argv[1]):
        mlflow.set_tracking_uri(model_job["tracking_uri"])
        model = mlflow.pyfunc.load_model(model_job["model_uri"])
        for job in model_job["jobs"]:
            model.predict(pd.read_parquet(job["input"]), params=job["params"]).to_parquet(job["output"])
    """
)

Job = tuple[pd.DataFrame, dict[str, Any]]


def predict_in_fresh_process(models: list[tuple[Logged, list[Job]]], tmp: Path) -> list[list[pd.DataFrame]]:
    """In one new interpreter, ``mlflow.pyfunc.load_model("models:/<name>/1")`` per store and predict."""
    spec: list[dict[str, Any]] = []
    for m, (logged, jobs) in enumerate(models):
        entries = []
        for j, (frame, params) in enumerate(jobs):
            frame.to_parquet(tmp / f"in-{m}-{j}.parquet")
            entries.append(
                {
                    "input": str(tmp / f"in-{m}-{j}.parquet"),
                    "output": str(tmp / f"out-{m}-{j}.parquet"),
                    "params": params,
                }
            )
        spec.append(
            {"tracking_uri": logged.tracking_uri, "model_uri": f"models:/{logged.name}/1", "jobs": entries}
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, json.dumps(spec)],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [[pd.read_parquet(job["output"]) for job in entry["jobs"]] for entry in spec]


# ------------------------------------------------------------------------------------------ tests
def test_registered_models_predict_like_the_recommender_in_a_fresh_process(
    trained: Trained, registered: dict[str, Logged], tmp_path: Path
) -> None:
    for logged in registered.values():
        version = MlflowClient(logged.tracking_uri).get_model_version(logged.name, "1")
        assert version.status == "READY" and version.run_id == logged.run_id

    known = ["u3", "u0", "u7"]  # not in index order: the output follows the input's user order
    jobs: list[Job] = [
        (pd.DataFrame({"user_id": known}), {"k": K}),
        (new_user_frame(), {"k": K}),
        (pd.DataFrame({"user_id": known}), {"k": 1, "exclude_seen": False}),
    ]
    results = predict_in_fresh_process([(logged, jobs) for logged in registered.values()], tmp_path)
    for got_known, got_new, got_k1 in results:
        assert_same(got_known, expected_known(trained, known))
        assert got_known["user_id"].drop_duplicates().tolist() == known
        assert_same(got_new, expected_new(trained))
        assert_same(got_k1, expected_known(trained, known, k=1, exclude_seen=False))


def predict(model: PyFuncModel, frame: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
    out = model.predict(frame, params=params)
    assert isinstance(out, pd.DataFrame)
    return out


def test_signature_params_and_exclusion(trained: Trained, loaded: PyFuncModel) -> None:
    signature = loaded.metadata.signature
    assert signature is not None
    assert signature.to_dict() == model_signature(trained.dataset).to_dict()
    inputs = {spec.name: (spec.type.name, spec.required) for spec in signature.inputs.inputs}
    assert inputs == {"user_id": ("string", True), "item_id": ("long", False), "timestamp": ("long", False)}
    assert {p.name: p.default for p in signature.params.params} == {"k": 10, "exclude_seen": True}

    default = predict(loaded, pd.DataFrame({"user_id": ["u1"]}))
    assert default["rank"].tolist() == list(range(1, 11))  # params default: k = 10
    assert default["score"].dtype == np.float64 and default["rank"].dtype == np.int64
    history = trained.bundle.items.decode(all_events(trained.dataset).for_user(1)).tolist()
    assert not set(history) & set(default["item_id"])

    # A new user whose history equals a known user's gets that user's recommendations.
    as_new = predict(loaded, pd.DataFrame({"user_id": ["someone"] * len(history), "item_id": history}))
    assert as_new["item_id"].tolist() == default["item_id"].tolist()
    np.testing.assert_allclose(as_new["score"], default["score"], atol=1e-6)


def test_unknown_user_is_a_clear_error(loaded: PyFuncModel) -> None:
    with pytest.raises(UnknownIdError, match=r"user id\(s\) unknown to this model, e\.g\. \['nobody'\]"):
        loaded.predict(pd.DataFrame({"user_id": ["u1", "nobody"]}))


def test_direct_predict_needs_load_context() -> None:
    with pytest.raises(RuntimeError, match="load_context"):
        RecsysPyfuncModel().predict(None, pd.DataFrame({"user_id": ["u1"]}))


def test_log_into_a_finished_run_by_id_and_disabled_tracker(
    trained: Trained, sqlite_uri: str, tmp_path: Path
) -> None:
    with using_store(sqlite_uri):
        with tracked_run(tracking_cfg(sqlite_uri, "unused"), "train", dataset="planted") as tracker:
            run_id = tracker.run_id
        assert run_id is not None and mlflow.active_run() is None
        info = log_pyfunc_model(run_id, trained.bundle_path, trained.dataset)
        assert info is not None and info.registered_model_version is None
        assert mlflow.active_run() is None  # no run was started or resumed on the fluent stack
        client = MlflowClient(sqlite_uri)
        assert client.get_run(run_id).info.status == "FINISHED"
        model = client.get_logged_model(info.model_id)
        assert model.source_run_id == run_id and str(model.status) == "READY"
        assert model.experiment_id == client.get_run(run_id).info.experiment_id  # not "Default"
        bundle = resolve_model_uri(f"runs:/{run_id}/model", cache_dir=tmp_path)
        assert load_bundle(bundle).manifest == trained.bundle.manifest
    assert log_pyfunc_model(Tracker.disabled(), trained.bundle_path, trained.dataset) is None


@pytest.mark.parametrize("store", [pytest.param("server", marks=pytest.mark.slow), "sqlite"])
def test_resolve_model_uri_round_trip_cache_alias_and_errors(
    trained: Trained,
    registered_sqlite: Logged,
    store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    logged = registered_sqlite if store == "sqlite" else request.getfixturevalue("registered")["server"]
    tracking = logged.tracking_uri
    cache = tmp_path / "cache"
    uri = f"models:/{logged.name}/1"

    path = resolve_model_uri(uri, tracking_uri=tracking, cache_dir=cache)
    assert path.is_relative_to(cache / logged.name / "1")
    loaded = load_bundle(path)
    assert loaded.manifest == trained.bundle.manifest
    for key, value in trained.bundle.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    assert resolve_model(uri, tracking_uri=tracking, cache_dir=cache).histories is not None

    # A cached version is not downloaded again; an alias resolves to its version's cache entry.
    def no_download(**_: Any) -> str:
        raise AssertionError("downloaded again")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", no_download)
    assert resolve_model_uri(uri, tracking_uri=tracking, cache_dir=cache) == path
    MlflowClient(tracking).set_registered_model_alias(logged.name, "champion", "1")
    assert (
        resolve_model_uri(f"models:/{logged.name}@champion", tracking_uri=tracking, cache_dir=cache) == path
    )
    monkeypatch.undo()

    # The logged model's own URI (models:/<model_id>) and the run's model resolve to the same bundle files.
    for other in (logged.model_uri, f"runs:/{logged.run_id}/model"):
        assert (
            load_bundle(resolve_model_uri(other, tracking_uri=tracking, cache_dir=cache)).manifest
            == loaded.manifest
        )

    # Plain paths pass through untouched (load_bundle reports a missing directory itself).
    assert resolve_model_uri(str(trained.bundle_path)) == trained.bundle_path
    assert resolve_model_uri("no/such/dir") == Path("no/such/dir")

    bad_uris = (
        f"models:/{logged.name}/7",
        "models:/no-such-model/1",
        f"models:/{logged.name}@nope",
        f"models:/{logged.name}/latest",
        f"runs:/{logged.run_id}/nothing-here",
    )
    for bad in bad_uris:
        with pytest.raises(ModelURIError, match=re.escape(bad)) as err:
            resolve_model_uri(bad, tracking_uri=tracking, cache_dir=cache)
        assert tracking in str(err.value)


def test_resolve_defaults_to_the_recsys_store_and_cache(
    registered: dict[str, Logged], sqlite_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No URI anywhere: ``./mlruns.db`` (recsys's default store), cached under ``$RECSYS_MODEL_CACHE``."""
    monkeypatch.chdir(Path(sqlite_uri.removeprefix("sqlite:///")).parent)
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path))
    name = registered["sqlite"].name
    assert resolve_model_uri(f"models:/{name}/1").is_relative_to(tmp_path / name / "1")


# ------------------------------------------------------------------------------------------ recsys recommend
def test_pyfunc_matches_recsys_recommend_parquet(
    trained: Trained, registered: dict[str, Logged], loaded: PyFuncModel, tmp_path: Path
) -> None:
    """``recsys recommend --model models:/name/1`` writes what the pyfunc model predicts (known + new)."""
    logged = registered["sqlite"]
    out = tmp_path / "recs"
    new_users = tmp_path / "new.parquet"
    new_user_frame().to_parquet(new_users)
    with using_store(logged.tracking_uri):
        recommend.run(trained.cfg, model=f"models:/{logged.name}/1", k=K, out=out, histories=new_users)
    cli = pl.read_parquet(out / "*.parquet").to_pandas()
    known = predict(loaded, pd.DataFrame({"user_id": trained.dataset.users.ids.to_list()}), params={"k": K})
    new = predict(loaded, new_user_frame(), params={"k": K})
    assert_same(pd.concat([known, new]), cli[["user_id", "item_id", "score", "rank"]])
