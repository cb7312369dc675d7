"""The real MovieLens files from the shared data directory (skipped when it is absent)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data.columns import ITEM, ROW, TIMESTAMP, USER
from recsys.data.pipeline import build, prepare
from recsys.data.prepared import PreparedDataset
from tests.data.conftest import data_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ml1m(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    cfg = data_config(
        shared_data / "ml-1m" / "ml-1m.txt",
        output_dir=tmp_path_factory.mktemp("ml1m") / "prepared",
        cleaning={"min_user_interactions": 5, "min_item_interactions": 5},
    )
    return PreparedDataset.load(prepare(cfg).path)


def test_ml1m_paper_counts(ml1m: PreparedDataset) -> None:
    counts = ml1m.manifest["counts"]
    assert (ml1m.n_users, ml1m.n_items, counts["interactions"]) == (6_040, 3_416, 999_611)
    assert (counts["validation"], counts["test"]) == (6_040, 6_040)
    assert ml1m.manifest["source"]["format"] == "sasrec_txt"
    # Ids are already 1..6040 / 1..3416: sorted-id vocabularies map user u -> u - 1, item i -> i.
    assert ml1m.users.ids.to_list() == list(range(1, 6_041))
    assert ml1m.items.ids.to_list() == list(range(1, 3_417))


def test_ml1m_targets_are_the_last_lines(ml1m: PreparedDataset, shared_data: Path) -> None:
    raw = pl.read_csv(
        shared_data / "ml-1m" / "ml-1m.txt", separator=" ", has_header=False, new_columns=["u", "i"]
    )
    last_two = raw.group_by("u", maintain_order=True).agg(pl.col("i").tail(2)).sort("u")
    test = ml1m.targets("test")
    val = ml1m.targets("validation")
    assert test.items.tolist() == [pair[-1] for pair in last_two["i"].to_list()]
    assert val.items.tolist() == [pair[0] for pair in last_two["i"].to_list()]
    train = ml1m.history("train")
    history_test = ml1m.history("test")
    assert np.array_equal(history_test.lengths(), train.lengths() + 1)
    # The test history is the training history plus the validation target, per user, in order.
    ends = history_test.offsets[1:] - 1
    assert np.array_equal(history_test.items[ends], val.items)


def test_ml100k_inter_with_timestamps(shared_data: Path) -> None:
    built = build(data_config(shared_data / "ml-100k" / "ml-100k.inter"))
    frame = built.interactions
    assert (built.input_rows, len(built.users), len(built.items)) == (100_000, 943, 1_682)
    assert built.source.format == "recbole_inter" and frame.schema[TIMESTAMP] == pl.Int64
    # Chronological within each user, ties in file order.
    order = frame.select(USER, TIMESTAMP, ROW)
    assert order.equals(order.sort([USER, TIMESTAMP, ROW]))


def _k_core(rows: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
    """The iterative k-core in plain Python, as an independent check of the pipeline's."""
    while True:
        users = Counter(u for u, _ in rows)
        items = Counter(i for _, i in rows)
        kept = [(u, i) for u, i in rows if users[u] >= k and items[i] >= k]
        if len(kept) == len(rows):
            return kept
        rows = kept


def test_ml_latest_small_ratings_csv(shared_data: Path) -> None:
    path = shared_data / "ml-latest-small" / "ratings.csv"
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    # Counted independently of polars: the official figures of the dataset's README.
    assert (len(rows), len({r[0] for r in rows}), len({r[1] for r in rows})) == (100_836, 610, 9_724)
    built = build(data_config(path, cleaning={"min_user_interactions": 5, "min_item_interactions": 5}))
    assert built.source.format == "movielens_csv"
    assert (built.input_rows, built.input_users, built.input_items) == (100_836, 610, 9_724)
    core = _k_core([(r[0], r[1]) for r in rows], 5)
    assert (built.interactions.height, len(built.users), len(built.items)) == (
        len(core),
        len({u for u, _ in core}),
        len({i for _, i in core}),
    )
    frame = built.interactions
    assert frame.select(USER, TIMESTAMP, ROW).equals(
        frame.select(USER, TIMESTAMP, ROW).sort([USER, TIMESTAMP, ROW])
    )


def test_bundled_sample_is_the_clean_official_file(shared_data: Path, project_root: Path) -> None:
    """The shipped copy is byte for byte the shared one (no stray trailing row, newline-terminated)."""
    for name in ("ratings.csv", "movies.csv", "README.txt"):
        bundled = (project_root / "data" / "ml-latest-small" / name).read_bytes()
        assert bundled == (shared_data / "ml-latest-small" / name).read_bytes(), name
        assert bundled.endswith(b"\n"), name


def shared_file(shared_data: Path, relative: str) -> Path:
    path = shared_data / relative
    if not path.is_file():
        pytest.skip(f"{path} not in the shared data")
    return path


def test_amazon_toys_one_sequence_per_line(shared_data: Path) -> None:
    path = shared_file(shared_data, "amazon-toys/Toys_and_Games.txt")
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    built = build(data_config(path))
    assert built.source.format == "sequence_per_line" and built.source.implied_order
    # Counted independently of polars, and the figures of the shared README.
    counted = (
        sum(len(t) - 1 for t in lines),
        len({t[0] for t in lines}),
        len({i for t in lines for i in t[1:]}),
    )
    assert counted == (167_597, 19_412, 11_924)
    assert (built.input_rows, built.input_users, built.input_items) == counted
    # Leave-one-out: each line's last item is the test target, the one before it validation.
    frame = built.interactions
    test = frame.filter(pl.col("split") == 2).sort(USER)[ITEM].to_list()
    by_user = {int(t[0]): int(t[-1]) for t in lines}
    assert [built.items.ids[i - 1] for i in test] == [by_user[u] for u in built.users.ids.to_list()]


def test_amazon_games_stays_sasrec_txt(shared_data: Path) -> None:
    path = shared_file(shared_data, "amazon-games/Video.txt")
    built = build(data_config(path))
    assert built.source.format == "sasrec_txt"
    assert (built.input_rows, built.input_users, built.input_items) == (287_107, 31_013, 23_715)


def test_raw_movielens_dat(shared_data: Path) -> None:
    path = shared_data / "ml-1m" / "ratings_users1-2999.dat"
    built = build(data_config(path))
    assert built.source.format == "movielens_dat" and built.source.encoding == "iso8859-1"
    assert (built.input_rows, len(built.users), len(built.items)) == (487_650, 2_999, 3_615)
    assert built.users.ids.to_list() == list(range(1, 3_000))
    liked = build(data_config(path, cleaning={"rating_threshold": 4}))
    with path.open(encoding="latin-1") as handle:
        expected = sum(int(line.split("::")[2]) >= 4 for line in handle)
    assert liked.interactions.height == expected
    assert built.interactions[ITEM].min() == 1
