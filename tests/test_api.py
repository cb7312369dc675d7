"""The notebook API (``recsys.BERT4Rec``): fit on a frame or a file, recommend in original ids exactly as
``recsys recommend`` does, new users' histories, similar items, embeddings that reproduce the scores,
save/load, config forms, and the README's five-line example run as written."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import polars.testing
import pytest

from recsys import BERT4Rec
from recsys.config import ConfigError, load_config
from recsys.data.errors import MissingColumnError, UnknownIdError
from recsys.jobs import recommend
from recsys.training.bundle import BundleError
from tests.training.helpers import planted_rule_log

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"user_id": "uid", "item_id": "iid", "timestamp": "ts"}
CONFIG: dict[str, Any] = {
    "data": {"source": {"columns": {"user": "uid", "item": "iid", "timestamp": "ts"}}},
    "model": {"hidden_size": 32, "n_layers": 1, "n_heads": 2, "max_len": 16, "dropout": 0.0},
    "train": {"max_epochs": 3, "batch_size": 32, "optimizer": {"lr": 0.01}},
    "runtime": {"progress_bar": False, "precision": "32", "threads": 1},
}


def log_frame(tmp: Path) -> pl.DataFrame:
    return pl.read_csv(planted_rule_log(tmp / "log.csv", n_users=50, n_items=30)).rename(COLUMNS)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def model(work: Path) -> BERT4Rec:
    """Fitted on a polars frame; ``work_dir`` keeps the prepared data and bundle for the job to use."""
    return BERT4Rec(CONFIG, work_dir=work / "fit").fit(log_frame(work))


def test_recommend_equals_the_recommend_job(model: BERT4Rec, work: Path, tmp_path: Path) -> None:
    users = [f"u{i}" for i in (7, 0, 31)]
    got = model.recommend(users=users, k=4)
    assert isinstance(got, pl.DataFrame)
    assert got.columns == ["uid", "iid", "score", "rank"]
    assert got["uid"].unique(maintain_order=True).to_list() == users  # request order
    listed = tmp_path / "users.txt"
    listed.write_text("\n".join(users), encoding="utf-8")
    job = recommend.run(
        model.config, model=work / "fit" / "run" / "model", users=listed, k=4, out=tmp_path / "o"
    )
    want = pl.read_parquet(job.out / "*.parquet").sort("user_id", "rank")
    mine = got.sort("uid", "rank")
    assert mine["uid"].to_list() == want["user_id"].to_list()
    assert mine["iid"].to_list() == want["item_id"].to_list()
    np.testing.assert_allclose(mine["score"].to_numpy(), want["score"].to_numpy(), atol=1e-6)
    assert model.fit_result is not None and model.fit_result.epochs == 3


def test_every_user_by_default_and_seen_items_excluded(model: BERT4Rec, work: Path) -> None:
    everyone = model.recommend(k=3)
    log = log_frame(work)
    assert everyone["uid"].n_unique() == log["uid"].n_unique() and everyone.height == 3 * 50
    assert everyone.join(log, on=["uid", "iid"]).height == 0
    assert model.recommend(users=["u1"], k=3, exclude_seen=False).join(log, on=["uid", "iid"]).height > 0


def test_a_new_users_history_scores_like_the_same_known_history(model: BERT4Rec, work: Path) -> None:
    events = log_frame(work).filter(pl.col("uid") == "u3")
    new = events.with_columns(pl.lit("stranger").alias("uid")).reverse()  # the timestamp orders it
    as_new = model.recommend(histories=new, k=5)
    known = model.recommend(users=["u3"], k=5)
    assert as_new["uid"].unique().to_list() == ["stranger"]
    assert as_new["iid"].to_list() == known["iid"].to_list()
    np.testing.assert_allclose(as_new["score"].to_numpy(), known["score"].to_numpy(), atol=1e-6)
    with pytest.raises(MissingColumnError, match="iid"):
        model.recommend(histories=new.drop("iid"))
    with pytest.raises(UnknownIdError, match="nobody"):
        model.recommend(users=["u1", "nobody"])


def test_pandas_in_pandas_out_and_a_path(model: BERT4Rec, work: Path, tmp_path: Path) -> None:
    frame = log_frame(work)
    from_pandas = BERT4Rec(CONFIG).fit(frame.to_pandas())
    recs = from_pandas.recommend(users=["u1"], k=3)
    assert isinstance(recs, pd.DataFrame) and list(recs.columns) == ["uid", "iid", "score", "rank"]
    # The same data, seed and config train the same model whatever carried the data.
    pl.testing.assert_frame_equal(pl.from_pandas(recs), model.recommend(users=["u1"], k=3))
    csv = tmp_path / "log.csv"
    frame.write_csv(csv)
    from_path = BERT4Rec(CONFIG).fit(csv)
    assert isinstance(from_path.recommend(users=["u1"], k=3), pl.DataFrame)
    # A pandas request to a polars-fitted model answers in pandas.
    new = frame.filter(pl.col("uid") == "u2").to_pandas()
    assert isinstance(model.recommend(histories=new, k=3), pd.DataFrame)


def test_embeddings_reproduce_the_scores(model: BERT4Rec, tmp_path: Path) -> None:
    items = model.embeddings()
    assert items.columns == ["iid", "bias", "embedding"] and items.height == 30
    users = model.embeddings("users", users=["u5", "u9"], path=tmp_path / "e" / "users.parquet")
    assert users.columns == ["uid", "embedding"]
    pl.testing.assert_frame_equal(pl.read_parquet(tmp_path / "e" / "users.parquet"), users)
    vectors = np.stack(items["embedding"].to_numpy())  # [n_items, d]
    recs = model.recommend(users=["u5", "u9"], k=5)
    for uid, state in zip(users["uid"], users["embedding"].to_numpy(), strict=True):
        scores = vectors @ state + items["bias"].to_numpy()  # [n_items]
        mine = recs.filter(pl.col("uid") == uid)
        index = items["iid"].to_list()
        by_hand = [scores[index.index(i)] for i in mine["iid"]]
        np.testing.assert_allclose(by_hand, mine["score"].to_numpy(), rtol=1e-4, atol=1e-5)


def test_similar_items_are_the_nearest_by_cosine(model: BERT4Rec) -> None:
    similar = model.similar_items([4, 11], k=3)
    assert similar.columns == ["iid", "similar_iid", "score", "rank"]
    assert similar["iid"].to_list() == [4] * 3 + [11] * 3
    items = model.embeddings()
    unit = np.stack(items["embedding"].to_numpy())
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    ids = items["iid"].to_list()
    for query in (4, 11):
        cosine = unit @ unit[ids.index(query)]
        cosine[ids.index(query)] = -np.inf
        best = [ids[j] for j in np.argsort(-cosine)[:3]]
        assert similar.filter(pl.col("iid") == query)["similar_iid"].to_list() == best


def test_save_and_load_round_trip(model: BERT4Rec, tmp_path: Path) -> None:
    path = model.save(tmp_path / "saved")
    assert sorted(p.name for p in path.iterdir()) == ["api.json", "bundle", "histories.parquet"]
    loaded = BERT4Rec.load(path)
    pl.testing.assert_frame_equal(loaded.recommend(k=4), model.recommend(k=4))
    pl.testing.assert_frame_equal(loaded.similar_items(k=2), model.similar_items(k=2))
    loaded.save(path)  # replacing a saved model in place works (atomic rename)
    weights = path / "bundle" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BundleError, match=r"weights\.safetensors"):
        BERT4Rec.load(path)
    with pytest.raises(BundleError, match=r"not a model written by BERT4Rec\.save"):
        BERT4Rec.load(tmp_path)


def test_config_forms_and_errors(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train:\n  max_epochs: 7\n", encoding="utf-8")
    from_yaml = BERT4Rec(yaml_file).config
    from_dict = BERT4Rec({"train": {"max_epochs": 7}}).config
    from_object = BERT4Rec(load_config(yaml_file)).config
    assert from_yaml == from_dict == from_object
    assert BERT4Rec(overrides=["train.max_epochs=7"]).config == from_dict
    assert BERT4Rec(overrides={"train.max_epochs": 7}).config == from_dict
    assert from_dict.tracking.enabled is False  # tracking is off unless asked for
    assert BERT4Rec(tracking=True).config.tracking.enabled is True
    with pytest.raises(ConfigError, match=r"train\.lr.*did you mean train\.optimizer\.lr"):
        BERT4Rec({"train": {"lr": 0.1}})
    with pytest.raises(RuntimeError, match=r"not fitted: call fit"):
        BERT4Rec().recommend(users=[1])


@pytest.mark.slow  # a fresh interpreter imports torch and Lightning
def test_the_api_imports_neither_mlflow_nor_optuna(tmp_path: Path) -> None:
    """A notebook without a tracking store: fitting and recommending import neither."""
    script = (
        "import sys, polars as pl\n"
        "from recsys import BERT4Rec\n"
        f"cfg = {CONFIG!r}\n"
        f"frame = pl.read_csv({str(planted_rule_log(tmp_path / 'log.csv', n_users=20))!r})\n"
        f"frame = frame.rename({COLUMNS!r})\n"
        "cfg['train']['max_epochs'] = 1\n"
        "BERT4Rec(cfg).fit(frame).recommend(k=2)\n"
        "print(sorted(m for m in ('mlflow', 'optuna') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_tracking_true_trains_through_the_train_job(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracked = BERT4Rec(CONFIG, tracking=True, overrides={"tracking.tracking_uri": uri, "train.max_epochs": 1})
    tracked.fit(log_frame(tmp_path))
    (run,) = MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()])
    assert run.info.status == "FINISHED"
    assert any("transitions" in key for key in run.data.metrics)  # the train job's baselines
    assert run.outputs.model_outputs  # and its logged pyfunc model
    assert tracked.recommend(users=["u1"], k=2).height == 2


# ------------------------------------------------------------------------------------------ the README
def readme_example() -> str:
    """The python block after the NOTEBOOK-EXAMPLE marker of README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- NOTEBOOK-EXAMPLE[^>]*-->\s*```python\n(.*?)```", text, flags=re.S)
    assert match, "README.md has no NOTEBOOK-EXAMPLE python block"
    return match.group(1)


def run_notebook_cell(code: str) -> Any:
    """Execute ``code`` as a notebook cell: every statement, and the value of a final expression."""
    tree = ast.parse(code)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    namespace: dict[str, Any] = {}
    exec(compile(tree, "README.md", "exec"), namespace)
    return None if last is None else eval(compile(ast.Expression(last.value), "README.md", "eval"), namespace)


@pytest.mark.slow  # one training epoch on the bundled sample
def test_readme_notebook_example_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    code = readme_example()
    lines = [line for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) <= 5, code
    monkeypatch.chdir(ROOT)
    before = sorted(p.name for p in ROOT.iterdir())
    recs = run_notebook_cell(code)
    assert sorted(p.name for p in ROOT.iterdir()) == before  # it wrote nothing into the repository
    assert isinstance(recs, pl.DataFrame)
    assert recs.columns == ["userId", "movieId", "score", "rank"]
    assert recs["userId"].unique(maintain_order=True).to_list() == [1, 2, 3]
    assert recs.group_by("userId", maintain_order=True).len()["len"].to_list() == [10, 10, 10]
    ratings = pl.read_csv(ROOT / "data" / "ml-latest-small" / "ratings.csv")
    assert recs.join(ratings, on=["userId", "movieId"]).height == 0  # nothing they have rated
    assert set(recs["movieId"]) <= set(ratings["movieId"])


def test_readme_example_is_found_and_is_a_cell() -> None:
    """The extraction itself, on a block whose answer is known."""
    assert run_notebook_cell("x = 2\nx * 21") == 42
    assert "BERT4Rec(" in readme_example()
