"""Sequences: CSR construction, access, validation."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.sequences import Sequences


def test_from_sorted_all_users() -> None:
    seqs = Sequences.from_sorted(np.array([0, 0, 2, 2, 2]), np.array([5, 6, 7, 8, 9]), n_users=4)
    assert seqs.users.tolist() == [0, 1, 2, 3]
    assert seqs.offsets.tolist() == [0, 2, 2, 5, 5]
    assert seqs.lengths().tolist() == [2, 0, 3, 0]
    assert seqs.get(2).tolist() == [7, 8, 9] and seqs.get(1).tolist() == []
    assert seqs.items.dtype == np.int32 and seqs.offsets.dtype == np.int64 and seqs.users.dtype == np.int64


def test_from_sorted_present_users_only() -> None:
    seqs = Sequences.from_sorted(np.array([1, 3, 3]), np.array([4, 5, 6]))
    assert seqs.users.tolist() == [1, 3] and len(seqs) == 2
    assert seqs.for_user(3).tolist() == [5, 6] and seqs.for_user(2).tolist() == []
    assert seqs.position(3) == 1
    assert seqs.row_users().tolist() == [1, 3, 3]
    assert [(u, s.tolist()) for u, s in seqs] == [(1, [4]), (3, [5, 6])]


def test_empty() -> None:
    seqs = Sequences.empty()
    assert len(seqs) == 0 and seqs.lengths().tolist() == []


def test_invalid_csr_is_rejected() -> None:
    with pytest.raises(ValueError, match="offsets"):
        Sequences(np.array([0, 1]), np.array([0, 2]), np.array([1, 2], dtype=np.int32))
    with pytest.raises(ValueError, match="ascending"):
        Sequences(np.array([1, 0]), np.array([0, 1, 2]), np.array([1, 2], dtype=np.int32))
    with pytest.raises(ValueError, match="n_users"):
        Sequences.from_sorted(np.array([0, 5]), np.array([1, 2]), n_users=3)


def test_take_selects_rows_in_order() -> None:
    seqs = Sequences.from_sorted(np.array([0, 0, 2, 2, 2, 3]), np.array([5, 6, 7, 8, 9, 4]), n_users=4)
    sub = seqs.take(np.array([0, 2, 3]))
    assert sub.users.tolist() == [0, 2, 3]
    assert [s.tolist() for _, s in sub] == [[5, 6], [7, 8, 9], [4]]
    assert seqs.take(np.array([1])).lengths().tolist() == [0]
    assert len(seqs.take(np.array([], dtype=np.int64))) == 0
