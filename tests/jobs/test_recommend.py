"""The ``recommend`` and ``similar-items`` jobs: output schema and ids, filters, users and histories
files, unknown ids, bad input, atomic output under SIGKILL, and DDP sharding equal to one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from recsys.cli import main
from recsys.config import ConfigError, RecsysConfig
from recsys.data.errors import MissingColumnError, RaggedRowError, SourceNotFoundError, UnknownIdError
from recsys.data.sequences import Sequences
from recsys.inference.recommender import Recommender
from recsys.inference.writer import SLEEP_AFTER_PART_ENV, OutputDirError, read_manifest
from recsys.jobs import recommend, similar_items
from recsys.training.bundle import load_bundle
from tests.inference.helpers import Setup, read_parts, untrained_setup

ROOT = Path(__file__).resolve().parents[2]
K = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return untrained_setup(tmp_path_factory.mktemp("recommend"))


def override(cfg: RecsysConfig, sets: dict[str, Any]) -> RecsysConfig:
    """``cfg`` with dotted keys replaced."""
    raw = cfg.model_dump(mode="json")
    for key, value in sets.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return RecsysConfig.model_validate(raw)


def full_histories(setup: Setup) -> Sequences:
    frame = setup.dataset.interactions().select("user", "item").collect()
    return Sequences.from_sorted(
        frame["user"].to_numpy(), frame["item"].to_numpy(), n_users=setup.dataset.n_users
    )


def reference(setup: Setup, histories: Sequences) -> pl.DataFrame:
    """The Recommender's top k on the same histories (index space, batches in input order): what every
    recommend output must equal."""
    recommender = Recommender.load(load_bundle(setup.bundle))
    rows = []
    for top in recommender.topk(histories, K, order="input"):
        users, items, scores, rank = top.to_long()
        rows.append(pl.DataFrame({"row": users, "item": items, "score": scores, "rank": rank}))
    return pl.concat(rows).sort(["row", "rank"])


def no_leftovers(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# ------------------------------------------------------------------------------------------ output
def test_all_users_schema_original_ids_parts_and_manifest(setup: Setup, tmp_path: Path) -> None:
    cfg = override(setup.cfg, {"inference.rows_per_part": 23})
    out = tmp_path / "recs"
    result = recommend.run(cfg, model=setup.bundle, k=K, out=out)

    frame = read_parts(out)
    assert frame.columns == ["user_id", "item_id", "score", "rank"]
    assert frame.schema["user_id"] == pl.String and frame.schema["item_id"] == pl.Int64
    assert frame.schema["score"] == pl.Float32 and frame.schema["rank"] == pl.Int32
    assert sorted(frame["user_id"].unique()) == sorted(setup.dataset.users.ids.to_list())
    assert set(frame["item_id"].unique()) <= set(setup.dataset.items.ids.to_list())
    assert (
        frame.group_by("user_id").agg(pl.col("rank").sort()).get_column("rank").to_list()
        == [list(range(1, K + 1))] * setup.dataset.n_users
    )

    # 23 rows per part -> 4 whole users (20 rows) per part; users never split across parts.
    manifest = read_manifest(out)
    assert len(manifest["parts"]) == result.parts == 15 and all(p["rows"] == 20 for p in manifest["parts"])
    assert manifest["rows"] == result.rows == frame.height == 60 * K
    assert manifest["model"]["path"] == str(setup.bundle)
    assert len(manifest["model"]["manifest_sha256"]) == 64
    assert manifest["data_fingerprint"] == load_bundle(setup.bundle).fingerprint
    assert manifest["k"] == K and manifest["users"] == 60 and manifest["exclude_seen"] is True
    assert result.users_per_second > 0 and no_leftovers(tmp_path)

    # The same numbers as the library call, decoded to original ids.
    want = reference(setup, full_histories(setup))
    users = setup.dataset.users.ids.to_numpy()
    items = setup.dataset.items.ids.to_numpy()
    decoded = want.with_columns(
        pl.Series("user_id", users[want["row"].to_numpy()]),
        pl.Series("item_id", items[want["item"].to_numpy() - 1]),
    )
    got = frame.sort(["user_id", "rank"])
    expected = decoded.sort(["user_id", "rank"])
    assert got["item_id"].to_list() == expected["item_id"].to_list()
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-6)


def test_seen_items_excluded_unless_included(setup: Setup, tmp_path: Path) -> None:
    events = setup.dataset.interactions().select("user", "item").collect()
    seen = pl.DataFrame(
        {
            "user_id": setup.dataset.users.decode(events["user"].to_numpy()),
            "item_id": setup.dataset.items.decode(events["item"].to_numpy()),
        }
    )
    excluded = read_parts(recommend.run(setup.cfg, model=setup.bundle, k=K, out=tmp_path / "a").out)
    assert excluded.join(seen, on=["user_id", "item_id"], how="inner").height == 0
    included = recommend.run(setup.cfg, model=setup.bundle, k=K, out=tmp_path / "b", include_seen=True)
    assert read_parts(included.out).join(seen, on=["user_id", "item_id"], how="inner").height > 0
    assert read_manifest(included.out)["exclude_seen"] is False


def test_allow_and_deny_files(setup: Setup, tmp_path: Path) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text("\n".join(str(i) for i in range(1, 16)) + "\n", encoding="utf-8")
    deny = tmp_path / "deny.csv"
    deny.write_text("item_id\n3\n4\n", encoding="utf-8")
    frame = read_parts(
        recommend.run(setup.cfg, model=setup.bundle, k=K, out=tmp_path / "r", allow=allow, deny=deny).out
    )
    assert set(frame["item_id"].unique()) <= set(range(1, 16)) - {3, 4}
    assert frame.height > 0


def test_users_file_subset_and_unknown_users(setup: Setup, tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("u3\nu1\nnobody\nu3\n", encoding="utf-8")
    with pytest.raises(UnknownIdError, match=r"users\.txt, column 'user_id': 1 user id\(s\).*nobody"):
        recommend.run(setup.cfg, model=setup.bundle, k=K, users=users, out=tmp_path / "r")
    assert not (tmp_path / "r").exists() and no_leftovers(tmp_path)

    dropping = override(setup.cfg, {"data.unknown_ids": "drop"})
    result = recommend.run(dropping, model=setup.bundle, k=K, users=users, out=tmp_path / "r")
    assert result.unknown_users == 1 and result.users == 2
    assert read_manifest(result.out)["unknown_ids"]["users"] == 1
    frame = read_parts(result.out)
    assert frame["user_id"].unique().sort().to_list() == ["u1", "u3"]
    # A csv/parquet with a user_id column works the same way.
    table = tmp_path / "users.parquet"
    pl.DataFrame({"user_id": ["u1", "u3"]}).write_parquet(table)
    again = read_parts(recommend.run(setup.cfg, model=setup.bundle, k=K, users=table, out=tmp_path / "p").out)
    assert again.equals(frame)


def test_users_file_listing_every_user_out_of_index_order(setup: Setup, tmp_path: Path) -> None:
    """Every user, listed in another order than the vocabulary's: each still gets their own history's
    recommendations (a shortcut once took the dataset's rows as they were and named them in file order)."""
    ids = setup.dataset.users.ids.to_list()
    listed = ids[::-1]
    users = tmp_path / "users.txt"
    users.write_text("\n".join(listed) + "\n", encoding="utf-8")
    result = recommend.run(setup.cfg, model=setup.bundle, k=K, users=users, out=tmp_path / "f")
    by_file = read_parts(result.out)
    everyone = read_parts(recommend.run(setup.cfg, model=setup.bundle, k=K, out=tmp_path / "all").out)
    assert sorted(by_file["user_id"].unique().to_list()) == sorted(listed)
    assert by_file.sort(["user_id", "rank"]).equals(everyone.sort(["user_id", "rank"]))


def test_histories_file_scores_new_users_from_that_history(setup: Setup, tmp_path: Path) -> None:
    hist = tmp_path / "hist.csv"
    hist.write_text(
        "user_id,item_id,timestamp\nnew1,5,20\nnew1,3,10\nnew2,7,1\nnew1,999,30\n", encoding="utf-8"
    )
    # Located by physical line as prepare does (the header is line 1): the 4th data row is line 5.
    with pytest.raises(UnknownIdError, match=r"hist\.csv, line 5, column 'item_id'"):
        recommend.run(setup.cfg, model=setup.bundle, k=K, users="all", histories=hist, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()

    dropping = override(setup.cfg, {"data.unknown_ids": "drop"})
    users = tmp_path / "users.txt"
    users.write_text("new1\nnew2\nu0\n", encoding="utf-8")
    result = recommend.run(dropping, model=setup.bundle, k=K, users=users, histories=hist, out=tmp_path / "r")
    assert result.unknown_items == 1
    assert result.users_from_histories == 2 and result.users_from_dataset == 1
    frame = read_parts(result.out)
    # new1's history in time order is items 3 then 5 (indices = ids here: items are 1..30).
    items = setup.dataset.items
    new1 = Sequences(np.array([0]), np.array([0, 2]), items.encode([3, 5])[0].astype(np.int32))
    want = reference(setup, new1)
    got = frame.filter(pl.col("user_id") == "new1").sort("rank")
    assert got["item_id"].to_list() == items.decode(want["item"].to_numpy()).tolist()
    assert not {3, 5} & set(got["item_id"].to_list())

    # With --users all: every dataset user plus the new ones; a known user in the file (u0) is scored
    # from the file's history instead of the dataset's, and appears once.
    hist.write_text("user_id,item_id\nu0,7\nnew3,8\n", encoding="utf-8")
    every = recommend.run(setup.cfg, model=setup.bundle, k=K, histories=hist, out=tmp_path / "all")
    assert every.users_from_dataset == 59 and every.users_from_histories == 2 and every.users == 61
    frame = read_parts(every.out)
    assert frame.group_by("user_id").len()["len"].to_list() == [K] * 61
    u0 = Sequences(np.array([0]), np.array([0, 1]), items.encode([7])[0].astype(np.int32))
    u0_items = frame.filter(pl.col("user_id") == "u0").sort("rank")["item_id"].to_list()
    assert u0_items == items.decode(reference(setup, u0)["item"].to_numpy()).tolist()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"users": "missing.txt"}, SourceNotFoundError, "missing.txt: file not found"),
        ({"users": "nocol.csv"}, MissingColumnError, r"nocol\.csv, column 'user_id'"),
        ({"histories": "ragged.csv"}, RaggedRowError, r"ragged\.csv, line 3"),
        ({"k": 0}, ConfigError, "k must be >= 1"),
        ({"deny": "missing_items.txt"}, SourceNotFoundError, "missing_items.txt"),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(
    setup: Setup, tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    (tmp_path / "nocol.csv").write_text("uid\nu1\n", encoding="utf-8")
    (tmp_path / "ragged.csv").write_text("user_id,item_id,timestamp\na,1,1\nb,2\n", encoding="utf-8")
    args: dict[str, Any] = {
        "k": K,
        **{k: tmp_path / v if isinstance(v, str) else v for k, v in kwargs.items()},
    }
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        recommend.run(setup.cfg, model=setup.bundle, out=out, **args)
    assert not out.exists() and no_leftovers(tmp_path)


def test_refuses_to_replace_a_foreign_directory(setup: Setup, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(OutputDirError, match="refusing to replace"):
        recommend.run(setup.cfg, model=setup.bundle, k=K, out=tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_cli_recommend_and_similar_items_json(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--model", str(setup.bundle), "--k", "3", *setup.overrides(), "--json"]
    assert main(["recommend", *base, "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    payload = json.loads(printed[0])
    assert payload["users"] == 60 and payload["rows"] == 180 and payload["k"] == 3

    assert main(["similar-items", *base, "--out", str(tmp_path / "s")]) == 0
    payload = json.loads(capsys.readouterr().out.strip())
    assert payload["items"] == 30 and payload["rows"] == 90

    assert (
        main(["recommend", *base, "--out", str(tmp_path / "x"), "--users", str(tmp_path / "none.txt")]) == 2
    )
    assert "none.txt: file not found" in capsys.readouterr().err


def test_cli_k_left_out_is_the_configs_inference_k(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--model", str(setup.bundle), *setup.overrides(), "--set", "inference.k=4", "--json"]
    assert main(["recommend", *base, "--out", str(tmp_path / "r")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["k"] == 4 and payload["rows"] == 4 * 60
    assert read_manifest(tmp_path / "r")["k"] == 4
    assert main(["similar-items", *base, "--out", str(tmp_path / "s")]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 4 * 30
    # An explicit --k still wins over the config.
    assert main(["recommend", *base, "--k", "2", "--out", str(tmp_path / "r2")]) == 0
    assert json.loads(capsys.readouterr().out)["k"] == 2


def test_similar_items_output(setup: Setup, tmp_path: Path) -> None:
    result = similar_items.run(setup.cfg, model=setup.bundle, k=29, out=tmp_path / "s")
    frame = read_parts(result.out)
    assert frame.columns == ["item_id", "similar_item_id", "score", "rank"]
    assert frame.height == 30 * 29 and result.rows == frame.height
    assert frame.filter(pl.col("item_id") == pl.col("similar_item_id")).height == 0
    pairs = frame.join(
        frame.select(
            pl.col("item_id").alias("similar_item_id"),
            pl.col("similar_item_id").alias("item_id"),
            pl.col("score").alias("back"),
        ),
        on=["item_id", "similar_item_id"],
    )
    assert pairs.height == frame.height
    np.testing.assert_allclose(pairs["score"].to_numpy(), pairs["back"].to_numpy(), atol=1e-6)
    assert read_manifest(result.out)["kind"] == "similar_items"


# ------------------------------------------------------------------------------------------ crash safety
def _cli(setup: Setup, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cmd = [
        sys.executable, "-m", "recsys", "recommend", "--model", str(setup.bundle), "--k", str(K),
        "--out", str(out), *setup.overrides(), "--set", "inference.rows_per_part=10", *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_run_leaves_the_previous_output_and_a_rerun_completes(
    setup: Setup, tmp_path: Path
) -> None:
    out = tmp_path / "recs"
    cfg = override(setup.cfg, {"inference.rows_per_part": 10})
    previous = recommend.run(cfg, model=setup.bundle, k=2, out=out)  # an older, complete output
    before = read_parts(out)

    proc = _cli(setup, out, env={SLEEP_AFTER_PART_ENV: "60"})
    deadline = time.monotonic() + 240
    while not list(tmp_path.glob(".recs.tmp-*/part-*.parquet")):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no part was written in time"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert read_parts(out).equals(before) and read_manifest(out)["k"] == previous.k == 2  # untouched
    assert list(tmp_path.glob(".recs.tmp-*"))  # the dead run's staging is there, but not at --out

    rerun = recommend.run(cfg, model=setup.bundle, k=K, out=out)
    assert read_manifest(out)["k"] == K and rerun.rows == 60 * K
    assert read_parts(out).equals(
        read_parts(recommend.run(cfg, model=setup.bundle, k=K, out=tmp_path / "ref").out)
    )
    assert no_leftovers(tmp_path)  # the rerun removed the dead run's staging directory


@pytest.mark.slow
def test_ddp_two_processes_write_the_same_rows_as_one(setup: Setup, tmp_path: Path) -> None:
    base = override(setup.cfg, {"inference.rows_per_part": 40, "inference.batch_size": 7})
    single = recommend.run(base, model=setup.bundle, k=K, out=tmp_path / "one")
    ddp = override(
        base,
        {"runtime.strategy": "ddp_spawn", "runtime.devices": 2, "runtime.accelerator": "cpu"},
    )
    double = recommend.run(ddp, model=setup.bundle, k=K, out=tmp_path / "two")
    manifest = read_manifest(double.out)
    assert manifest["world_size"] == double.world_size == 2
    files = [p["file"] for p in manifest["parts"]]
    assert any(f.startswith("part-rank0-") for f in files) and any(f.startswith("part-rank1-") for f in files)
    assert all(p["rows"] <= 40 for p in manifest["parts"])
    assert read_parts(double.out).equals(read_parts(single.out))
    assert no_leftovers(tmp_path)
