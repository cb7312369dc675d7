"""mask_items and windows on tiny, hand-checkable tensors."""

from __future__ import annotations

import pytest
import torch

from recsys.config import MaskingConfig
from recsys.model.masking import mask_items, windows

N_ITEMS = 50
MASK = N_ITEMS + 1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def left_padded(lengths: list[int], width: int) -> torch.Tensor:
    """Rows of consecutive item ids 1, 2, ... left-padded to ``width``."""
    rows = [[0] * (width - n) + list(range(1, n + 1)) for n in lengths]
    return torch.tensor(rows, dtype=torch.long)


def test_padding_is_never_a_target_nor_changed() -> None:
    items = left_padded([0, 1, 3, 6], width=6)
    cfg = MaskingConfig(mask_prob=1.0, last_item_prob=0.0, replace_mask=0.5, replace_random=0.5)
    for seed in range(20):
        inputs, labels = mask_items(items, n_items=N_ITEMS, cfg=cfg, generator=gen(seed))
        pad = items == 0
        assert (labels[pad] == 0).all()
        assert (inputs[pad] == 0).all()
    # The all-padding row stays all padding with no target.
    assert (labels[0] == 0).all() and (inputs[0] == 0).all()


def test_everything_masked_when_mask_prob_is_one() -> None:
    items = left_padded([2, 4, 5], width=5)
    cfg = MaskingConfig(mask_prob=1.0, replace_mask=1.0, replace_random=0.0, last_item_prob=0.0)
    inputs, labels = mask_items(items, n_items=N_ITEMS, cfg=cfg, generator=gen())
    real = items != 0
    assert torch.equal(labels, items)
    assert (inputs[real] == MASK).all()


def test_at_least_one_target_per_nonempty_sequence() -> None:
    # mask_prob tiny: the coin almost never fires, so the fallback must pick one real position.
    items = left_padded([0, 1, 2, 7, 7, 3] * 50, width=7)
    cfg = MaskingConfig(mask_prob=1e-9, last_item_prob=0.0)
    _, labels = mask_items(items, n_items=N_ITEMS, cfg=cfg, generator=gen(3))
    n_targets = (labels > 0).sum(dim=1)
    nonempty = (items > 0).any(dim=1)
    assert (n_targets[nonempty] == 1).all()
    assert (n_targets[~nonempty] == 0).all()
    # The fallback target is uniform over the real positions, so with 50 rows of length 7 it is not
    # always the same column.
    cols = (labels[items[:, 0] > 0] > 0).float().argmax(dim=1)
    assert cols.unique().numel() > 3


def test_last_item_only_rows() -> None:
    items = left_padded([4, 4, 1, 0], width=4)
    cfg = MaskingConfig(mask_prob=1.0, replace_mask=0.0, replace_random=1.0, last_item_prob=1.0)
    inputs, labels = mask_items(items, n_items=N_ITEMS, cfg=cfg, generator=gen())
    expected_labels = torch.zeros_like(items)
    expected_labels[:3, -1] = items[:3, -1]
    assert torch.equal(labels, expected_labels)
    # Always shown as [MASK] (the inference situation), even though replace_mask is 0 here.
    assert (inputs[:3, -1] == MASK).all()
    assert torch.equal(inputs[:, :-1], items[:, :-1])
    assert torch.equal(inputs[3], items[3])


def test_last_item_prob_share() -> None:
    items = torch.randint(1, N_ITEMS + 1, (4000, 10), generator=gen(1))
    cfg = MaskingConfig(mask_prob=0.5, last_item_prob=0.25)
    _, labels = mask_items(items, n_items=N_ITEMS, cfg=cfg, generator=gen(2))
    targets = labels > 0
    only_last = targets[:, -1] & (targets.sum(dim=1) == 1)
    # Rows with only the last item by chance: 0.5 * 0.5**9 ~ 0.001, so the share is ~0.25 + 0.75 * 0.001.
    assert abs(only_last.float().mean().item() - 0.2508) < 0.02


def test_replacement_proportions_80_10_10() -> None:
    items = torch.randint(1, N_ITEMS + 1, (400, 500), generator=gen(5))
    cfg = MaskingConfig(mask_prob=0.3, replace_mask=0.8, replace_random=0.1, last_item_prob=0.0)
    inputs, labels = mask_items(items, n_items=N_ITEMS, cfg=cfg, generator=gen(6))
    targets = labels > 0
    n = targets.sum().item()
    assert abs(n / items.numel() - 0.3) < 0.005
    shown_mask = (inputs[targets] == MASK).float().mean().item()
    unchanged = (inputs[targets] == items[targets]).float().mean().item()
    # A random replacement equals the original with probability 1/N_ITEMS.
    assert abs(shown_mask - 0.8) < 0.01
    assert abs(unchanged - (0.1 + 0.1 / N_ITEMS)) < 0.01
    random_shown = inputs[targets & (inputs != MASK) & (inputs != items)]
    assert random_shown.min() >= 1 and random_shown.max() <= N_ITEMS
    # Non-targets are untouched.
    assert torch.equal(inputs[~targets], items[~targets])


def test_seeded_determinism() -> None:
    items = left_padded([3, 8, 5, 1], width=8)
    cfg = MaskingConfig(mask_prob=0.4)
    a = mask_items(items, n_items=N_ITEMS, cfg=cfg, generator=gen(11))
    b = mask_items(items, n_items=N_ITEMS, cfg=cfg, generator=gen(11))
    c = mask_items(items, n_items=N_ITEMS, cfg=cfg, generator=gen(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_inputs_not_modified_in_place() -> None:
    items = left_padded([3, 5], width=5)
    before = items.clone()
    mask_items(items, n_items=N_ITEMS, cfg=MaskingConfig(mask_prob=1.0), generator=gen())
    assert torch.equal(items, before)


@pytest.mark.parametrize(
    ("length", "max_len", "mode", "stride", "expected"),
    [
        (0, 5, "recent", None, [(0, 0)]),
        (3, 5, "sliding", None, [(0, 3)]),
        (5, 5, "sliding", 2, [(0, 5)]),
        (12, 5, "recent", None, [(7, 12)]),
        (12, 5, "sliding", None, [(0, 5), (2, 7), (7, 12)]),
        (12, 5, "sliding", 3, [(0, 5), (1, 6), (4, 9), (7, 12)]),
        (10, 5, "sliding", 5, [(0, 5), (5, 10)]),
    ],
)
def test_windows(
    length: int, max_len: int, mode: str, stride: int | None, expected: list[tuple[int, int]]
) -> None:
    got = windows(length, max_len, mode, stride)  # type: ignore[arg-type]
    assert got == expected
    assert all(0 <= s <= e <= length and e - s <= max_len for s, e in got)
    assert got[-1][1] == length  # the most recent item is always covered


def test_windows_cover_every_item() -> None:
    for length in range(1, 40):
        for stride in (1, 2, 7, 10):
            covered = set()
            for s, e in windows(length, 10, "sliding", stride):
                covered.update(range(s, e))
            assert covered == set(range(length))


def test_windows_rejects_bad_args() -> None:
    with pytest.raises(ValueError):
        windows(10, 0)
    with pytest.raises(ValueError):
        windows(10, 5, "bogus")  # type: ignore[arg-type]
