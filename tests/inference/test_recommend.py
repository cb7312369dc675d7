"""recsys.inference.recommend: batched top-k against a brute-force reference, filters, input files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

import recsys.inference.recommend as rec
from recsys.config import ModelConfig
from recsys.data.errors import (
    InvalidValueError,
    MissingColumnError,
    RaggedRowError,
    SourceNotFoundError,
    UnknownIdError,
)
from recsys.data.sequences import Sequences
from recsys.data.vocab import Vocabulary
from recsys.inference.recommend import (
    TopK,
    blocked_items,
    histories_from_frame,
    read_histories_file,
    read_id_file,
    select_rows,
    topk_batches,
)
from recsys.model.bert4rec import BERT4Rec
from tests.inference.helpers import random_histories

N_ITEMS = 15


@pytest.fixture(scope="module")
def model() -> BERT4Rec:
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, n_layers=1, n_heads=2, max_len=6, dropout=0.0, attention_dropout=0.0)
    return BERT4Rec(N_ITEMS, cfg).eval()


@pytest.fixture(scope="module")
def histories() -> Sequences:
    """Lengths 0..12 (some longer than max_len - 1 = 5, some empty), repeats allowed."""
    rows = random_histories(np.random.default_rng(1), 23, N_ITEMS, 0, 12)
    lengths = np.array([len(r) for r in rows])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.array([i for r in rows for i in r], dtype=np.int32)
    return Sequences(np.arange(len(rows), dtype=np.int64) * 3, offsets, items)  # users need not be 0..n-1


def brute_force(
    model: BERT4Rec,
    histories: Sequences,
    k: int,
    *,
    exclude_seen: bool = True,
    blocked: set[int] = frozenset(),  # type: ignore[assignment]
) -> dict[int, list[tuple[int, float]]]:
    """One user at a time: score, drop PAD/MASK/seen/blocked, sort by (score desc, index asc)."""
    out = {}
    for user, seq in histories:
        history = torch.as_tensor(np.asarray(seq, dtype=np.int64)).reshape(1, -1)
        with torch.inference_mode():
            scores = model.predict_next(history)[0].tolist()
        banned = {0, N_ITEMS + 1} | set(blocked) | (set(seq.tolist()) if exclude_seen else set())
        ranked = sorted((i for i in range(N_ITEMS + 2) if i not in banned), key=lambda i: (-scores[i], i))
        out[user] = [(i, scores[i]) for i in ranked[:k]]
    return out


def collect(blocks: Any) -> dict[int, list[tuple[int, float]]]:
    out: dict[int, list[tuple[int, float]]] = {}
    for top in blocks:
        assert isinstance(top, TopK)
        for u, items, scores in zip(top.users, top.items, top.scores, strict=True):
            assert int(u) not in out, "a row appeared twice"
            out[int(u)] = [(int(i), float(s)) for i, s in zip(items, scores, strict=True) if i != 0]
    return out


def assert_same(got: dict[int, list[tuple[int, float]]], want: dict[int, list[tuple[int, float]]]) -> None:
    assert got.keys() == want.keys()
    for user in want:
        assert [i for i, _ in got[user]] == [i for i, _ in want[user]], user
        np.testing.assert_allclose(
            [s for _, s in got[user]], [s for _, s in want[user]], rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(
    ("batch_size", "order"), [(1, "input"), (4, "length"), (100, "length"), (7, "input")]
)
def test_topk_batches_equals_brute_force(
    model: BERT4Rec, histories: Sequences, batch_size: int, order: Any
) -> None:
    got = collect(topk_batches(model, histories, 4, batch_size=batch_size, order=order))
    assert_same(got, brute_force(model, histories, 4))


def test_seen_items_excluded_over_the_full_history_not_just_the_window(
    model: BERT4Rec, histories: Sequences
) -> None:
    got = collect(topk_batches(model, histories, 5))
    for user, seq in histories:
        assert not {i for i, _ in got[user]} & set(seq.tolist())
    # Included on request: then the result is the plain ranking.
    got_all = collect(topk_batches(model, histories, 5, exclude_seen=False))
    assert_same(got_all, brute_force(model, histories, 5, exclude_seen=False))
    assert any({i for i, _ in got_all[u]} & set(s.tolist()) for u, s in histories)


def test_allow_and_deny_lists(model: BERT4Rec, histories: Sequences) -> None:
    allow = np.array([1, 2, 3, 4, 5, 6, 7])
    deny = np.array([2, 9])
    got = collect(topk_batches(model, histories, 3, allow=allow, deny=deny))
    blocked = set(range(1, N_ITEMS + 1)) - {1, 3, 4, 5, 6, 7}
    assert_same(got, brute_force(model, histories, 3, blocked=blocked))
    for recs in got.values():
        assert {i for i, _ in recs} <= {1, 3, 4, 5, 6, 7}


def test_fewer_candidates_than_k_leaves_empty_slots(model: BERT4Rec) -> None:
    seqs = Sequences(np.array([0]), np.array([0, 2]), np.array([1, 2], dtype=np.int32))
    (top,) = topk_batches(model, seqs, 5, allow=np.array([1, 2, 3]))
    assert top.items.tolist() == [[3, 0, 0, 0, 0]]
    assert np.isfinite(top.scores[0, 0]) and np.isneginf(top.scores[0, 1:]).all()
    users, items, _, rank = top.to_long()
    assert users.tolist() == [0] and items.tolist() == [3] and rank.tolist() == [1]


def test_encoder_chunks_do_not_change_results(
    model: BERT4Rec, histories: Sequences, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = collect(topk_batches(model, histories, 4, batch_size=64))
    monkeypatch.setattr(rec, "CPU_TOKENS_PER_CHUNK", 7)  # one or two rows per chunk
    assert_same(collect(topk_batches(model, histories, 4, batch_size=64)), whole)
    monkeypatch.setattr(rec, "CPU_TOKENS_PER_CHUNK", 10_000)
    monkeypatch.setattr(rec, "CPU_SCORES_PER_CHUNK", 3 * (N_ITEMS + 2))  # three rows of scores
    assert_same(collect(topk_batches(model, histories, 4, batch_size=64)), whole)


def test_bad_arguments(model: BERT4Rec, histories: Sequences) -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        next(topk_batches(model, histories, 0))
    with pytest.raises(ValueError, match="batch_size"):
        next(topk_batches(model, histories, 3, batch_size=0))
    with pytest.raises(ValueError, match="allow holds item indices outside"):
        blocked_items(N_ITEMS, allow=np.array([0, 3]))


def test_select_rows_renumbers(histories: Sequences) -> None:
    picked = select_rows(histories, np.array([4, 0, 2]))
    assert picked.users.tolist() == [0, 1, 2]
    for new, old in enumerate([4, 0, 2]):
        assert picked.get(new).tolist() == histories.get(old).tolist()


# ------------------------------------------------------------------------------------------ histories
class _Bundle:
    """The part of a Bundle that ``histories_from_frame`` reads."""

    def __init__(self, item_ids: list[int]) -> None:
        self.items = Vocabulary(pl.Series("id", item_ids), offset=1)


def test_histories_from_frame_orders_by_time_and_numbers_users_by_first_appearance() -> None:
    bundle = _Bundle([10, 20, 30, 40])
    frame = pl.DataFrame(
        {
            "user_id": ["new_b", "new_a", "new_b", "new_a", "new_b"],
            "item_id": [30, 10, 10, 40, 20],
            "timestamp": [5, 9, 1, 3, 5],
        }
    )
    seqs, user_ids, n_unknown = histories_from_frame(frame, bundle)  # type: ignore[arg-type]
    assert user_ids.tolist() == ["new_b", "new_a"] and n_unknown == 0
    assert seqs.users.tolist() == [0, 1]
    # new_b: t=1 item 10 (index 1), t=5 items 30 then 20 (file order breaks the tie) -> 1, 3, 2
    assert seqs.get(0).tolist() == [1, 3, 2]
    assert seqs.get(1).tolist() == [4, 1]
    # Without timestamps, file order is the order.
    seqs2, _, _ = histories_from_frame(frame.drop("timestamp"), bundle)  # type: ignore[arg-type]
    assert seqs2.get(0).tolist() == [3, 1, 2]


def test_histories_unknown_items_error_or_drop() -> None:
    bundle = _Bundle([10, 20])
    frame = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 99, 98]})
    with pytest.raises(UnknownIdError, match=r"hist\.csv, row 1, column 'item_id': 2 item id"):
        histories_from_frame(frame, bundle, source="hist.csv")  # type: ignore[arg-type]
    seqs, user_ids, n_unknown = histories_from_frame(frame, bundle, unknown="drop")  # type: ignore[arg-type]
    assert n_unknown == 2
    assert user_ids.tolist() == [1, 2]
    assert seqs.get(0).tolist() == [1] and seqs.get(1).tolist() == []  # user 2 keeps an empty history


def test_histories_bad_frames() -> None:
    bundle = _Bundle([10])
    with pytest.raises(MissingColumnError, match="no column 'item_id'"):
        histories_from_frame(pl.DataFrame({"user_id": [1]}), bundle)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="row 1, column 'user_id'"):
        histories_from_frame(pl.DataFrame({"user_id": [1, None], "item_id": [10, 10]}), bundle)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ files
def test_read_id_file_formats(tmp_path: Path) -> None:
    text = tmp_path / "users.txt"
    text.write_text("user_id\nu1\n\n u2 \nu1\n", encoding="utf-8")
    assert read_id_file(text, "user_id").to_list() == ["u1", "u2", "u1"]
    csv = tmp_path / "users.csv"
    csv.write_text("x,user_id\n1,7\n2,8\n", encoding="utf-8")
    assert read_id_file(csv, "user_id").to_list() == ["7", "8"]
    parquet = tmp_path / "items.parquet"
    pl.DataFrame({"item_id": [3, 4]}).write_parquet(parquet)
    assert read_id_file(parquet, "item_id").to_list() == [3, 4]


def test_read_id_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"missing\.txt: file not found"):
        read_id_file(tmp_path / "missing.txt", "user_id")
    csv = tmp_path / "users.csv"
    csv.write_text("uid\n1\n", encoding="utf-8")
    with pytest.raises(MissingColumnError, match=r"users\.csv, column 'user_id': no column 'user_id'"):
        read_id_file(csv, "user_id")


def test_read_histories_file(tmp_path: Path) -> None:
    good = tmp_path / "h.csv"
    good.write_text("user_id,item_id,timestamp\na,1,10\na,2,5\n", encoding="utf-8")
    frame = read_histories_file(good)
    assert frame.columns == ["user_id", "item_id", "timestamp"] and frame.height == 2
    no_time = tmp_path / "h2.csv"
    no_time.write_text("user_id,item_id\na,1\n", encoding="utf-8")
    assert read_histories_file(no_time).columns == ["user_id", "item_id"]
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("user_id,item_id,timestamp\na,1,10\nb,2\nc,3,4\n", encoding="utf-8")
    with pytest.raises(RaggedRowError, match=r"ragged\.csv, line 3"):
        read_histories_file(ragged)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("uid,item_id\na,1\n", encoding="utf-8")
    with pytest.raises(MissingColumnError, match=r"wrong\.csv.*'user_id'"):
        read_histories_file(wrong)
