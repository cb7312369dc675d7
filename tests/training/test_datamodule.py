"""Training data views: the validation sample and which validation events are trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.training.datamodule import (
    EpochPermutation,
    LengthBucketSampler,
    SequenceDataModule,
    training_data,
)
from tests.training.helpers import planted_rule_log, prepared, tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("views")
    source = planted_rule_log(tmp / "log.csv", n_users=60, n_items=20, length=8)
    cfg = tiny_config(tmp, source)
    return cfg, prepared(cfg)


def test_default_holds_out_every_validation_event(setup) -> None:  # type: ignore[no-untyped-def]
    cfg, dataset = setup
    data = training_data(dataset, cfg.train)
    assert data.history is dataset.history("train")
    assert data.val_targets.users.tolist() == dataset.targets("validation").users.tolist()


def test_sampled_holdout_trains_on_the_other_users_validation_events(setup) -> None:  # type: ignore[no-untyped-def]
    cfg, dataset = setup
    sampled = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"val_users": 15, "validation_holdout": "sampled"})}
    )
    data = training_data(dataset, sampled.train)
    sample = set(data.val_targets.users.tolist())
    assert len(sample) == 15
    # the same seeded sample as validation on val_users alone (holdout "all")
    only_sample = cfg.model_copy(update={"train": cfg.train.model_copy(update={"val_users": 15})})
    assert training_data(dataset, only_sample.train).val_targets.users.tolist() == sorted(sample)
    assert len(dataset.targets("validation")) > 15
    for user in range(dataset.n_users):
        seq = data.history.for_user(user).tolist()
        before_test = dataset.history("test").for_user(user).tolist()
        if user in sample:
            assert seq == dataset.history("train").for_user(user).tolist()
        else:
            assert seq == before_test  # validation event included, test event never
    # every window fits max_len here, so the trained tokens are exactly those events
    module = SequenceDataModule(dataset, sampled.model, sampled.masking, sampled.train, sampled.eval)
    batches = list(module.val_dataloader())
    users = module.validation.targets.users[np.concatenate(batches)]
    assert sorted(users.tolist()) == sorted(sample)
    assert module.n_train_tokens() == len(data.history.items)


def test_sampled_holdout_of_every_user_is_the_full_holdout(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, planted_rule_log(tmp_path / "log.csv"))
    dataset = prepared(cfg)
    full = training_data(dataset, cfg.train)  # tiny_config: val_users null, validation_holdout all
    for val_users in (None, 10_000):  # no sample, or one larger than the users: everyone held out
        train = cfg.train.model_copy(update={"val_users": val_users, "validation_holdout": "sampled"})
        sampled = training_data(dataset, train)
        assert np.array_equal(sampled.history.items, full.history.items)
        assert len(sampled.val_targets.users) == len(full.val_targets.users)


def _sampler(lengths: np.ndarray, *, rank: int = 0, world: int = 1, pool: int = 64) -> LengthBucketSampler:
    return LengthBucketSampler(
        EpochPermutation(len(lengths), seed=3), lengths, 8, pool_batches=pool, rank=rank, world_size=world
    )


def test_bucket_sampler_covers_every_window_once_per_epoch() -> None:
    lengths = np.random.default_rng(0).integers(1, 200, size=203)
    sampler = _sampler(lengths)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(203))
    assert all(1 <= len(b) <= 8 for b in batches)
    assert list(sampler) == batches  # the plan is a function of (seed, epoch)
    sampler.sampler.set_epoch(1)
    assert list(sampler) != batches


def test_bucket_sampler_gives_ddp_ranks_disjoint_batches_of_similar_length() -> None:
    lengths = np.random.default_rng(1).integers(1, 200, size=203)
    # one pool: every batch is cut from the same length-sorted order
    ranks = [list(_sampler(lengths, rank=r, world=2, pool=1000)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(_sampler(lengths, world=2, pool=1000))
    seen = [i for r in ranks for b in r for i in b]
    assert len(seen) == len(set(seen)) >= 203 - 8  # disjoint; at most the odd batch is trimmed
    for b0, b1 in zip(ranks[0], ranks[1], strict=True):
        # the two batches of a step are neighbours in that order: no rank waits on a much longer batch
        assert lengths[b0].max() <= lengths[b1].min()
