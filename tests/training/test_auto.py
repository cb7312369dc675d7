"""``auto`` settings resolved from the data (max_len from the history lengths, dropout from the events per
item), logged and shipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.config import load_config
from recsys.training.auto import (
    BATCH_RULE,
    DROPOUT_RULE,
    ITEM_DECAY_WITH_FEATURES,
    MASK_RULE,
    MAX_LEN_BOUNDS,
    auto_batch_size,
    auto_dropout,
    auto_item_weight_decay,
    auto_mask_prob,
    auto_max_len,
    resolve_auto,
)
from recsys.training.bundle import load_bundle
from recsys.training.fit import fit
from tests.training.helpers import planted_rule_log, prepared, tiny_config


@pytest.mark.parametrize(
    ("lengths", "quantile", "expected"),
    [
        (np.arange(1, 101), 0.95, 104),  # 95.05 -> 96 items + [MASK] = 97 -> next multiple of 8
        (np.arange(1, 101), 0.5, 56),  # 50.5 -> 51 + 1 = 52 -> 56
        (np.full(50, 3), 0.95, MAX_LEN_BOUNDS[0]),  # 4 -> 8, below the floor
        (np.full(50, 5000), 0.95, MAX_LEN_BOUNDS[1]),  # clipped
        (np.array([], dtype=np.int64), 0.95, MAX_LEN_BOUNDS[0]),
    ],
)
def test_auto_max_len_by_hand(lengths: np.ndarray, quantile: float, expected: int) -> None:
    assert auto_max_len(lengths, quantile) == expected


def test_the_default_is_auto_and_a_number_passes_through(tmp_path: Path) -> None:
    assert load_config(None, []).model.max_len == "auto"
    source = planted_rule_log(tmp_path / "log.csv", n_users=20)
    cfg = tiny_config(tmp_path, source, **{"train.optimizer.item_weight_decay": "null"})
    assert resolve_auto(cfg, prepared(cfg)) == (cfg, {})
    with pytest.raises(ValueError, match="auto"):
        load_config(None, []).model.resolved_max_len()
    with pytest.raises(ValueError, match="dropout is 'auto'"):
        load_config(None, []).model.resolved_dropout()


def test_auto_dropout_by_events_per_item() -> None:
    threshold, dense, sparse = DROPOUT_RULE
    assert (dense, sparse) == (0.1, 0.3)
    assert auto_dropout(289 * 3416, 3416) == dense  # ML-1M's training events per item
    assert auto_dropout(128_773, 11_924) == sparse  # amazon-toys: 10.8 per item
    assert auto_dropout(int(threshold * 100), 100) == dense  # the threshold itself is dense
    assert auto_dropout(int(threshold * 100) - 1, 100) == sparse
    assert auto_dropout(0, 0) == sparse


def test_fit_resolves_dropout_and_ships_it(tmp_path: Path) -> None:
    # 80 users x 38 training events over 40 items: 76 per item, dense, so 0.1; one side pinned.
    source = planted_rule_log(tmp_path / "log.csv", n_users=80, length=40)
    overrides = {"model.dropout": "auto", "model.attention_dropout": 0.05, "train.max_epochs": 1}
    cfg = tiny_config(tmp_path, source, **overrides)
    result = fit(cfg, prepared(cfg))
    assert result.derived["model.dropout"] == 0.1 and "model.attention_dropout" not in result.derived
    assert result.config.model.resolved_dropout() == (0.1, 0.05)
    bundle = load_bundle(result.bundle_path)
    assert bundle.config.model.resolved_dropout() == (0.1, 0.05)


def test_fit_resolves_max_len_and_ships_it(tmp_path: Path) -> None:
    # 40 events per user, leave-one-out: 38 training events + [MASK] = 39 -> 40.
    source = planted_rule_log(tmp_path / "log.csv", n_users=30, length=40)
    cfg = tiny_config(tmp_path, source, **{"model.max_len": "auto", "train.max_epochs": 1})
    result = fit(cfg, prepared(cfg))
    assert result.derived["model.max_len"] == 40
    assert result.config.model.max_len == 40 and cfg.model.max_len == "auto"
    bundle = load_bundle(result.bundle_path)
    assert bundle.config.model.max_len == 40 and bundle.model.max_len == 40


def test_auto_mask_prob_by_events_per_item() -> None:
    threshold, dense, sparse = MASK_RULE
    assert (threshold, dense, sparse) == (DROPOUT_RULE[0], 0.3, 0.5)
    assert auto_mask_prob(289 * 3416, 3416) == dense  # ML-1M
    assert auto_mask_prob(128_773, 11_924) == sparse  # amazon-toys
    assert auto_mask_prob(int(threshold * 100), 100) == dense
    assert auto_mask_prob(int(threshold * 100) - 1, 100) == sparse
    assert load_config(None, []).masking.mask_prob == "auto"
    with pytest.raises(ValueError, match="mask_prob is 'auto'"):
        load_config(None, []).masking.resolved_mask_prob()


def test_fit_resolves_mask_prob_and_ships_it(tmp_path: Path) -> None:
    # 30 users x 38 training events over 40 items: 28.5 per item, sparse, so 0.5.
    source = planted_rule_log(tmp_path / "log.csv", n_users=30, length=40)
    cfg = tiny_config(tmp_path, source, **{"masking.mask_prob": "auto", "train.max_epochs": 1})
    result = fit(cfg, prepared(cfg))
    assert result.derived["masking.mask_prob"] == 0.5
    assert load_bundle(result.bundle_path).config.masking.resolved_mask_prob() == 0.5


def test_auto_batch_size_by_windows_per_epoch() -> None:
    largest, smallest, steps = BATCH_RULE
    assert (largest, smallest, steps) == (128, 32, 100)
    assert auto_batch_size(8_700) == 64  # ML-1M's sliding 200-item windows: 68 steps at 128, 136 at 64
    assert auto_batch_size(19_412) == 128  # amazon-toys: 152 steps
    assert auto_batch_size(100 * 128) == 128 and auto_batch_size(100 * 128 - 1) == 64  # the threshold
    assert auto_batch_size(610) == smallest and auto_batch_size(0) == smallest  # never below 32
    assert load_config(None, []).train.batch_size == "auto"
    with pytest.raises(ValueError, match="batch_size is 'auto'"):
        load_config(None, []).train.resolved_batch_size()


def test_fit_resolves_batch_size_and_ships_it(tmp_path: Path) -> None:
    # 30 users, every history inside max_len: 30 windows, so the smallest batch, one step per epoch.
    source = planted_rule_log(tmp_path / "log.csv", n_users=30, length=40)
    cfg = tiny_config(tmp_path, source, **{"train.batch_size": "auto", "train.max_epochs": 1})
    result = fit(cfg, prepared(cfg))
    assert result.derived["train.batch_size"] == BATCH_RULE[1]
    assert result.module.global_batch == BATCH_RULE[1]
    assert load_bundle(result.bundle_path).config.train.batch_size == BATCH_RULE[1]


def test_auto_item_weight_decay_only_with_item_features(tmp_path: Path) -> None:
    assert load_config(None, []).train.optimizer.item_weight_decay == "auto"
    assert auto_item_weight_decay(True) == ITEM_DECAY_WITH_FEATURES == 1.0
    assert auto_item_weight_decay(False) is None
    source = planted_rule_log(tmp_path / "log.csv", n_users=30)
    features = tmp_path / "features.json"
    features.write_text('{"1": ["a"]}', encoding="utf-8")
    data = prepared(tiny_config(tmp_path, source))
    for path, expected in ((None, None), (features, ITEM_DECAY_WITH_FEATURES)):
        sets = {"data.item_features.path": "null" if path is None else str(path)}
        resolved, derived = resolve_auto(tiny_config(tmp_path, source, **sets), data)
        assert resolved.train.optimizer.resolved_item_weight_decay() == expected
        assert derived["train.optimizer.item_weight_decay"] == expected
    # A number (or null) is the user's choice and passes through unlogged.
    cfg = tiny_config(tmp_path, source, **{"train.optimizer.item_weight_decay": 0.05})
    resolved, derived = resolve_auto(cfg, data)
    assert resolved.train.optimizer.item_weight_decay == 0.05
    assert "train.optimizer.item_weight_decay" not in derived
