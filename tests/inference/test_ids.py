"""recsys.inference.ids: raw history rows -> encoded histories, and the unknown-id policy."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.data.errors import InvalidValueError, MissingColumnError, UnknownIdError
from recsys.data.vocab import Vocabulary
from recsys.inference.ids import encode_ids, histories_from_frame


def _items(item_ids: list[int]) -> Vocabulary:
    return Vocabulary(pl.Series("id", item_ids), offset=1)


def test_histories_from_frame_orders_by_time_and_numbers_users_by_first_appearance() -> None:
    items = _items([10, 20, 30, 40])
    frame = pl.DataFrame(
        {
            "user_id": ["new_b", "new_a", "new_b", "new_a", "new_b"],
            "item_id": [30, 10, 10, 40, 20],
            "timestamp": [5, 9, 1, 3, 5],
        }
    )
    seqs, user_ids, n_unknown = histories_from_frame(frame, items)
    assert user_ids.to_list() == ["new_b", "new_a"] and n_unknown == 0
    assert seqs.users.tolist() == [0, 1]
    # new_b: t=1 item 10 (index 1), t=5 items 30 then 20 (file order breaks the tie) -> 1, 3, 2
    assert seqs.get(0).tolist() == [1, 3, 2]
    assert seqs.get(1).tolist() == [4, 1]
    # Without timestamps, file order is the order.
    seqs2, _, _ = histories_from_frame(frame.drop("timestamp"), items)
    assert seqs2.get(0).tolist() == [3, 1, 2]


def test_histories_unknown_items_error_or_drop() -> None:
    items = _items([10, 20])
    frame = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 99, 98]})
    with pytest.raises(UnknownIdError, match=r"hist\.csv, row 1, column 'item_id': 2 item id"):
        histories_from_frame(frame, items, source="hist.csv")
    seqs, user_ids, n_unknown = histories_from_frame(frame, items, unknown="drop")
    assert n_unknown == 2
    assert user_ids.to_list() == [1, 2]
    assert seqs.get(0).tolist() == [1] and seqs.get(1).tolist() == []  # user 2 keeps an empty history


def test_histories_bad_frames() -> None:
    items = _items([10])
    with pytest.raises(MissingColumnError, match="no column 'item_id'"):
        histories_from_frame(pl.DataFrame({"user_id": [1]}), items)
    with pytest.raises(InvalidValueError, match="row 1, column 'user_id'"):
        histories_from_frame(pl.DataFrame({"user_id": [1, None], "item_id": [10, 10]}), items)


def test_encode_ids_names_the_file_or_drops() -> None:
    users = Vocabulary(pl.Series("id", [3, 5, 8]))
    ids = pl.Series("user_id", ["5", "nobody", "3", "99"])
    with pytest.raises(
        UnknownIdError,
        match=r"u\.txt, column 'user_id': 2 user id\(s\) unknown to this model, e\.g\. \['nobody', '99'\]",
    ):
        encode_ids(users, ids, policy="error", what="user", source="u.txt")
    index, known = encode_ids(users, ids, policy="drop", what="user")
    assert index.tolist() == [1, 0] and known.tolist() == [True, False, True, False]
    assert np.array_equal(users.lookup(ids), [1, -1, 0, -1])
