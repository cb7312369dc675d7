"""Cleaning on tiny hand-written logs: k-core rounds, duplicates, tie-break, filters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.data.clean import k_core_mask, sort_chronologically
from recsys.data.columns import ITEM, ROW, TIMESTAMP, USER
from recsys.data.pipeline import Built, build
from tests.data.conftest import WriteFile, data_config

HEADER = "user_id,item_id,timestamp\n"


def decoded(built: Built) -> list[tuple[object, object, object]]:
    """(original user, original item, timestamp) per interaction, in prepared order."""
    frame = built.interactions
    users = built.users.decode(frame[USER].to_numpy())
    items = built.items.decode(frame[ITEM].to_numpy())
    return list(zip(users.tolist(), items.tolist(), frame[TIMESTAMP].to_list(), strict=True))


def csv(rows: Sequence[tuple[object, object, object]]) -> str:
    return HEADER + "".join(f"{u},{i},{t}\n" for u, i, t in rows)


# ------------------------------------------------------------------------------------------ k-core
# u4 has one event -> out; then item d has one -> out; then u3 has one -> out; then item c -> out.
KCORE_ROWS = [
    ("u1", "a", 1),
    ("u1", "b", 2),
    ("u2", "a", 1),
    ("u2", "b", 2),
    ("u2", "c", 3),
    ("u3", "c", 1),
    ("u3", "d", 2),
    ("u4", "d", 1),
]


def test_k_core_iterates_until_stable(write_file: WriteFile) -> None:
    path = write_file("log.csv", csv(KCORE_ROWS))
    built = build(data_config(path, cleaning={"min_user_interactions": 2, "min_item_interactions": 2}))
    assert decoded(built) == [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2)]
    stats = built.filters[-1].to_json()
    assert stats["step"] == "k_core"
    assert (stats["rounds"], stats["rows_removed"], stats["users_removed"], stats["items_removed"]) == (
        4,
        4,
        2,
        2,
    )


def test_k_core_items_only(write_file: WriteFile) -> None:
    rows = [(1, "a", 1), (1, "b", 2), (2, "a", 3), (2, "c", 4), (3, "a", 5)]
    built = build(data_config(write_file("log.csv", csv(rows)), cleaning={"min_item_interactions": 2}))
    assert decoded(built) == [(1, "a", 1), (2, "a", 3), (3, "a", 5)]
    stats = built.filters[-1].to_json()
    assert (stats["rounds"], stats["rows_removed"], stats["users_removed"], stats["items_removed"]) == (
        1,
        2,
        0,
        2,
    )


def _naive_k_core(pairs: list[tuple[int, int]], min_user: int, min_item: int) -> set[int]:
    alive = set(range(len(pairs)))
    while True:
        users = Counter(pairs[k][0] for k in alive)
        items = Counter(pairs[k][1] for k in alive)
        keep = {k for k in alive if users[pairs[k][0]] >= min_user and items[pairs[k][1]] >= min_item}
        if keep == alive:
            return alive
        alive = keep


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=60),
    min_user=st.integers(1, 4),
    min_item=st.integers(1, 4),
)
def test_k_core_mask_matches_naive(pairs: list[tuple[int, int]], min_user: int, min_item: int) -> None:
    users = np.array([p[0] for p in pairs])
    items = np.array([p[1] for p in pairs])
    mask, _ = k_core_mask(users, items, min_user, min_item)
    assert set(np.flatnonzero(mask).tolist()) == _naive_k_core(pairs, min_user, min_item)
    if mask.any():
        assert np.bincount(users[mask])[np.unique(users[mask])].min() >= min_user
        assert np.bincount(items[mask])[np.unique(items[mask])].min() >= min_item


# ------------------------------------------------------------------------------------------ duplicates
DUP_ROWS = [
    (1, "a", 3),  # row 0: a later occurrence of (1, a), written first
    (1, "b", 2),
    (1, "a", 1),
    (2, "a", 5),  # rows 3 and 4: the same pair at the same time; file order decides
    (2, "a", 5),
]


def test_duplicates_keep_all(write_file: WriteFile) -> None:
    built = build(data_config(write_file("log.csv", csv(DUP_ROWS))))
    assert decoded(built) == [(1, "a", 1), (1, "b", 2), (1, "a", 3), (2, "a", 5), (2, "a", 5)]


def test_duplicates_keep_first(write_file: WriteFile) -> None:
    built = build(data_config(write_file("log.csv", csv(DUP_ROWS)), cleaning={"duplicates": "keep_first"}))
    assert decoded(built) == [(1, "a", 1), (1, "b", 2), (2, "a", 5)]
    assert built.interactions[ROW].to_list() == [2, 1, 3]
    assert built.filters[3].to_json()["rows_removed"] == 2


def test_duplicates_keep_last(write_file: WriteFile) -> None:
    built = build(data_config(write_file("log.csv", csv(DUP_ROWS)), cleaning={"duplicates": "keep_last"}))
    assert decoded(built) == [(1, "b", 2), (1, "a", 3), (2, "a", 5)]
    assert built.interactions[ROW].to_list() == [1, 0, 4]


# ------------------------------------------------------------------------------------------ order
def test_chronological_order_with_file_order_tie_break(write_file: WriteFile) -> None:
    rows = [(7, "x", 10), (7, "y", 10), (7, "z", 5), (3, "w", 10), (7, "v", 10)]
    built = build(data_config(write_file("log.csv", csv(rows))))
    assert decoded(built) == [(3, "w", 10), (7, "z", 5), (7, "x", 10), (7, "y", 10), (7, "v", 10)]
    assert built.interactions[ROW].to_list() == [3, 2, 0, 1, 4]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 4)), min_size=1, max_size=40),
    as_float=st.booleans(),
)
def test_sort_key_path_matches_three_column_sort(rows: list[tuple[int, int]], as_float: bool) -> None:
    frame = pl.DataFrame(
        {
            USER: [u for u, _ in rows],
            ITEM: list(range(len(rows))),
            TIMESTAMP: [float(t) if as_float else t for _, t in rows],
            ROW: pl.Series(range(len(rows)), dtype=pl.UInt32),
        }
    )
    got = sort_chronologically(frame, n_users=6)
    expected = frame.sort([USER, TIMESTAMP, ROW])
    assert got[ROW].to_list() == expected[ROW].to_list()


# ------------------------------------------------------------------------------------------ filters
def test_rating_threshold(write_file: WriteFile) -> None:
    text = "user_id,item_id,timestamp,rating\n1,a,1,5\n1,b,2,2\n2,a,3,4\n2,c,4,3.5\n"
    path = write_file("log.csv", text)
    built = build(data_config(path, columns={"rating": "rating"}, cleaning={"rating_threshold": 4}))
    assert decoded(built) == [(1, "a", 1), (2, "a", 3)]
    stats = built.filters[2].to_json()
    assert (stats["rows_removed"], stats["users_removed"], stats["items_removed"]) == (2, 0, 2)


def test_event_type_filter(write_file: WriteFile) -> None:
    text = "user_id,item_id,timestamp,kind\n1,a,1,view\n1,b,2,buy\n2,a,3,cart\n2,c,4,buy\n"
    path = write_file("log.csv", text)
    built = build(data_config(path, columns={"event": "kind"}, cleaning={"event_types": ["buy", "cart"]}))
    assert decoded(built) == [(1, "b", 2), (2, "a", 3), (2, "c", 4)]
    assert built.filters[1].to_json()["rows_removed"] == 1


def test_vocabularies_are_sorted_original_ids(write_file: WriteFile) -> None:
    rows = [(30, 9, 1), (10, 7, 2), (20, 8, 3), (10, 9, 4)]
    built = build(data_config(write_file("log.csv", csv(rows))))
    assert built.users.ids.to_list() == [10, 20, 30]
    assert built.items.ids.to_list() == [7, 8, 9]
    assert built.interactions[USER].to_list() == [0, 0, 1, 2]
    assert built.interactions[ITEM].to_list() == [1, 3, 2, 3]
