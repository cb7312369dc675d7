"""Recommender: original ids in and out, known and new users, filters, similar items, embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import torch

from recsys.data.errors import UnknownIdError
from recsys.inference.known import write_known_histories
from recsys.inference.recommender import EMBEDDING, Recommender
from tests.inference.helpers import Setup, untrained_setup

K = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return untrained_setup(tmp_path_factory.mktemp("recommender"), n_users=40, n_items=25)


@pytest.fixture(scope="module")
def rec(setup: Setup) -> Recommender:
    return Recommender.load(setup.bundle, known=setup.dataset.path)


def by_hand(rec: Recommender, history: list[int], k: int, *, blocked: set[int] = frozenset()) -> list[int]:  # type: ignore[assignment]
    """One history scored alone, seen and blocked items dropped, sorted by (score desc, index asc)."""
    with torch.inference_mode():
        scores = rec.model.predict_next(torch.tensor([history or [0]]))[0].tolist()
    banned = {0, rec.n_items + 1, *history, *blocked}
    ranked = sorted((i for i in range(rec.n_items + 2) if i not in banned), key=lambda i: (-scores[i], i))
    return ranked[:k]


def test_known_users_by_original_id_in_request_order(setup: Setup, rec: Recommender) -> None:
    ids = setup.dataset.users.ids
    asked = [ids[7], ids[2], ids[7], ids[30]]  # a repeat is asked once
    frame = rec.recommend(asked, k=K)
    assert frame.columns == ["user_id", "item_id", "score", "rank"]
    assert frame["user_id"].unique(maintain_order=True).to_list() == [ids[7], ids[2], ids[30]]
    everything = setup.dataset.all_events()
    for user in (7, 2, 30):
        got = frame.filter(pl.col("user_id") == ids[user]).sort("rank")
        assert got["rank"].to_list() == list(range(1, K + 1))
        want = by_hand(rec, everything.get(user).tolist(), K)
        assert got["item_id"].to_list() == setup.dataset.items.decode(np.array(want)).tolist()
        assert (got["score"].diff().drop_nulls() <= 0).all()


def test_every_known_user_by_default(setup: Setup, rec: Recommender) -> None:
    frame = rec.recommend(k=2)
    assert frame["user_id"].unique(maintain_order=True).to_list() == setup.dataset.users.ids.to_list()


def test_new_users_from_a_pandas_frame_and_the_all_rule(setup: Setup, rec: Recommender) -> None:
    items = setup.dataset.items.ids
    history = pd.DataFrame(
        {"user_id": ["new", "new", "new"], "item_id": [items[3], items[1], items[5]], "timestamp": [3, 1, 2]}
    )
    only_new = rec.recommend(histories=history, k=K)
    assert only_new["user_id"].unique().to_list() == ["new"]
    in_time_order = [2, 6, 4]  # item indices of items[1], items[5], items[3]
    assert (
        only_new["item_id"].to_list() == items.gather(np.array(by_hand(rec, in_time_order, K)) - 1).to_list()
    )
    both = rec.requests("all", history)
    assert both.from_known == setup.dataset.n_users and both.from_histories == 1
    assert both.row_ids[-1] == "new"


def test_allow_deny_and_unknown_ids(setup: Setup, rec: Recommender) -> None:
    items, user = setup.dataset.items.ids, setup.dataset.users.ids[0]
    allowed = items.head(8).to_list()
    frame = rec.recommend([user], k=20, allow=allowed, deny=[items[0]])
    history = setup.dataset.all_events().get(0).tolist()
    blocked = set(range(1, rec.n_items + 1)) - set(range(2, 9))
    assert (
        frame["item_id"].to_list()
        == items.gather(np.array(by_hand(rec, history, 20, blocked=blocked)) - 1).to_list()
    )
    with pytest.raises(UnknownIdError, match=r"1 user id\(s\) unknown to this model, e\.g\. \['nobody'\]"):
        rec.recommend([user, "nobody"], k=2)
    dropping = Recommender(rec.model, rec.users, rec.items, known=rec.known, unknown_ids="drop")
    assert dropping.recommend([user, "nobody"], k=2)["user_id"].unique().to_list() == [user]


def test_known_histories_file_and_none(setup: Setup, rec: Recommender, tmp_path: Path) -> None:
    path = write_known_histories(setup.dataset, tmp_path / "histories.parquet")
    from_file = Recommender.load(setup.bundle, known=path)
    assert from_file.recommend(k=K).equals(rec.recommend(k=K))
    bare = Recommender.load(setup.bundle)
    with pytest.raises(ValueError, match="no known users' histories"):
        bare.recommend([setup.dataset.users.ids[0]])


def test_similar_items_for_some_items_equal_those_of_all(setup: Setup, rec: Recommender) -> None:
    items = setup.dataset.items.ids
    every = rec.similar_items(k=3)
    assert (
        every.columns == ["item_id", "similar_item_id", "score", "rank"] and every.height == 3 * rec.n_items
    )
    some = rec.similar_items([items[4], items[0]], k=3)
    assert some["item_id"].unique(maintain_order=True).to_list() == [items[4], items[0]]
    for item in (items[4], items[0]):
        got, want = (f.filter(pl.col("item_id") == item) for f in (some, every))
        assert got.drop("score").equals(want.drop("score"))
        np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), rtol=1e-5)


def test_embeddings_are_what_the_scores_are_made_of(setup: Setup, rec: Recommender) -> None:
    item_vectors = rec.item_embeddings()
    assert item_vectors["item_id"].to_list() == setup.dataset.items.ids.to_list()
    users = rec.user_embeddings(setup.dataset.users.ids.head(5))
    assert users.height == 5 and len(users[EMBEDDING][0]) == rec.model.cfg.hidden_size
    weight = np.stack(item_vectors[EMBEDDING].to_numpy())  # [n_items, d]
    bias = rec.model.output_bias()
    for row, user in enumerate(range(5)):
        history = torch.tensor([setup.dataset.all_events().get(user).tolist() or [0]])
        with torch.inference_mode():
            want = rec.model.predict_next(history)[0, 1:-1].numpy()
        got = weight @ users[EMBEDDING][row].to_numpy() + (0 if bias is None else bias[1:-1].detach().numpy())
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    normal = np.stack(rec.item_embeddings(normalized=True)[EMBEDDING].to_numpy())
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0, rtol=1e-5)
