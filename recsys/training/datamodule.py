"""Lightning data module: windows over user histories, length-bucketed batches, seeded masking.

Every random choice in an epoch (window order, batch composition; masks are drawn in the module) is
a function of ``(seed, epoch, batch index)`` only. That is what makes a run resumed from the last
epoch checkpoint after a crash end at exactly the metrics of an uninterrupted run, and what lets DDP
ranks agree on the batch plan without communicating.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from recsys.config import EvalConfig, MaskingConfig, ModelConfig, TrainConfig
from recsys.data.prepared import PreparedDataset
from recsys.data.sequences import Sequences, pad_ranges
from recsys.evaluation.protocol import EvalSet
from recsys.model.masking import windows

__all__ = [
    "EpochPermutation",
    "LengthBucketSampler",
    "SequenceDataModule",
    "TrainBatch",
    "TrainingData",
    "build_windows",
    "training_data",
]


@dataclass
class TrainBatch:
    """Training windows, left-padded to the longest window in the batch (masked in the module)."""

    items: torch.Tensor  # [B, L] item ids, PAD = 0 on the left

    def __len__(self) -> int:
        return int(self.items.shape[0])


def build_windows(seqs: Sequences, max_len: int, masking: MaskingConfig) -> tuple[np.ndarray, np.ndarray]:
    """All training windows as ``(starts, ends)`` into ``seqs.items``.

    Sequences with fewer than two items carry no learnable signal for masked prediction of a
    neighbour-conditioned item and are still kept (a single item can be masked; its context is empty).
    """
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    offsets = seqs.offsets
    lengths = np.diff(offsets)
    short = lengths <= max_len
    # Most sequences fit: vectorise them, loop only over the long ones.
    starts.append(offsets[:-1][short & (lengths > 0)])
    ends.append(offsets[1:][short & (lengths > 0)])
    for i in np.flatnonzero(~short):
        for s, e in windows(int(lengths[i]), max_len, masking.window, masking.stride):
            starts.append(np.array([offsets[i] + s], dtype=np.int64))
            ends.append(np.array([offsets[i] + e], dtype=np.int64))
    return np.concatenate(starts).astype(np.int64), np.concatenate(ends).astype(np.int64)


class EpochPermutation(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``(seed, epoch)``; Lightning calls ``set_epoch``."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, stream])

    def __iter__(self) -> Iterator[int]:
        return iter(self.rng(0).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of windows of similar length, reshuffled every epoch.

    The window order comes from ``sampler`` (an :class:`EpochPermutation`, which Lightning re-seeds
    through ``batch_sampler.sampler.set_epoch`` at every epoch start). The order is cut into pools of
    ``pool_batches`` batches, sorted by length inside each pool and cut into batches; the batch order is
    then shuffled, in groups of ``world_size`` neighbouring batches. Under DDP each rank takes every
    ``world_size``-th batch of the same plan (trimmed so every rank gets the same count), so the batches
    of one step have similar lengths.
    """

    def __init__(
        self,
        sampler: EpochPermutation,
        lengths: np.ndarray,
        batch_size: int,
        *,
        bucket: bool = True,
        pool_batches: int = 64,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.sampler = sampler
        self.lengths = lengths
        self.batch_size = batch_size
        self.bucket = bucket
        self.pool = pool_batches * batch_size
        self.rank = rank
        self.world_size = world_size

    def plan(self) -> list[np.ndarray]:
        """Every batch of the current epoch, for all ranks."""
        order = np.fromiter(iter(self.sampler), dtype=np.int64, count=len(self.sampler))
        batches: list[np.ndarray] = []
        for p in range(0, len(order), self.pool):
            pool = order[p : p + self.pool]
            if self.bucket:
                pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches.extend(pool[b : b + self.batch_size] for b in range(0, len(pool), self.batch_size))
        # Shuffle groups of world_size neighbouring batches (similar lengths, as they were cut from one
        # sorted pool): the ranks take one batch of a group each at the same step, so under DDP no rank
        # waits long for another at the gradient all-reduce. With one process a group is one batch.
        world = self.world_size
        groups = [batches[i : i + world] for i in range(0, len(batches) - len(batches) % world, world)]
        perm = self.sampler.rng(1).permutation(len(groups))
        return [batch for g in perm for batch in groups[g]]

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.plan()[self.rank :: self.world_size]:
            yield b.tolist()

    def __len__(self) -> int:
        n = len(self.lengths)
        if self.bucket:
            # pools are cut separately, so each pool may end with a partial batch
            n_batches = sum(-(-min(self.pool, n - p) // self.batch_size) for p in range(0, n, self.pool))
        else:
            n_batches = -(-n // self.batch_size)
        return (n_batches - n_batches % self.world_size) // self.world_size


class _WindowCollate:
    """Row indices of windows -> a :class:`TrainBatch`, left-padded to the batch's longest window."""

    def __init__(self, items: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self.items, self.starts, self.ends = items, starts, ends

    def __call__(self, idx: list[int]) -> TrainBatch:
        starts, ends = self.starts[idx], self.ends[idx]
        width = max(1, int((ends - starts).max(initial=0)))
        return TrainBatch(items=torch.from_numpy(pad_ranges(self.items, starts, ends, width)))


class _Rows(Dataset[int]):
    """Item ``i`` is ``i``: the collate function (or the step) reads the rows itself."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _as_rows(idx: list[int]) -> np.ndarray:
    return np.asarray(idx, dtype=np.int64)


@dataclass(frozen=True)
class TrainingData:
    """What a run trains on and validates on (``train.val_users``, ``train.validation_holdout``).

    Attributes:
        history: the events trained on, every user (empty sequences included).
        val_history: model input for validation (the training events, validation events excluded).
        val_targets: the validation targets: every user's, or the seeded ``val_users`` sample's.
    """

    history: Sequences
    val_history: Sequences
    val_targets: Sequences


def training_data(dataset: PreparedDataset, train: TrainConfig) -> TrainingData:
    """The training events and validation targets of ``dataset`` under ``train``'s holdout policy.

    The validation sample is a function of ``train.seed`` only, so every process (DDP ranks, the
    evaluate job fitting baselines on the same events) draws the same users.
    """
    targets = dataset.targets("validation")
    if train.val_users is not None and train.val_users < len(targets):
        rng = np.random.default_rng(train.seed)
        targets = targets.take(np.sort(rng.choice(len(targets), size=train.val_users, replace=False)))
    held_out = targets.users if train.validation_holdout == "sampled" else None
    return TrainingData(
        history=dataset.training_events(held_out),
        val_history=dataset.history("validation"),
        val_targets=targets,
    )


class SequenceDataModule(L.LightningDataModule):
    """Training windows and validation batches of :func:`training_data`."""

    def __init__(
        self,
        dataset: PreparedDataset,
        model: ModelConfig,
        masking: MaskingConfig,
        train: TrainConfig,
        evaluation: EvalConfig,
        *,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.num_workers = num_workers
        self.dataset = dataset
        self.model_cfg = model
        self.masking = masking
        self.train_cfg = train
        self.eval_cfg = evaluation
        self._sampler: LengthBucketSampler | None = None
        self._windows: tuple[np.ndarray, np.ndarray] | None = None
        self._data: TrainingData | None = None
        self._validation: EvalSet | None = None

    @property
    def data(self) -> TrainingData:
        """The training events and validation targets (computed once)."""
        if self._data is None:
            self._data = training_data(self.dataset, self.train_cfg)
        return self._data

    # -- training ---------------------------------------------------------------------------------
    def _train_windows(self) -> tuple[np.ndarray, np.ndarray]:
        if self._windows is None:
            self._windows = build_windows(self.data.history, self.model_cfg.resolved_max_len(), self.masking)
        return self._windows

    def n_train_tokens(self) -> int:
        starts, ends = self._train_windows()
        return int((ends - starts).sum())

    def train_batches_per_epoch(self, world_size: int = 1) -> int:
        starts, ends = self._train_windows()
        lengths = ends - starts
        return len(
            LengthBucketSampler(
                EpochPermutation(len(lengths), self.train_cfg.seed),
                lengths,
                self.train_cfg.resolved_batch_size(),
                bucket=self.train_cfg.bucket_by_length,
                world_size=world_size,
            )
        )

    def train_dataloader(self) -> DataLoader[Any]:
        starts, ends = self._train_windows()
        trainer = self._trainer_or_none()
        rank = trainer.global_rank if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        lengths = ends - starts
        self._sampler = LengthBucketSampler(
            EpochPermutation(len(lengths), self.train_cfg.seed),
            lengths,
            self.train_cfg.resolved_batch_size(),
            bucket=self.train_cfg.bucket_by_length,
            rank=rank,
            world_size=world,
        )
        epoch = trainer.current_epoch if trainer is not None else 0
        self.set_epoch(epoch)
        return DataLoader(
            _Rows(len(starts)),
            batch_sampler=self._sampler,
            collate_fn=_WindowCollate(self.data.history.items, starts, ends),
            num_workers=self.num_workers,
            persistent_workers=False,
        )

    def set_epoch(self, epoch: int) -> None:
        """Reseeds the batch plan for ``epoch`` (called at every epoch start)."""
        if self._sampler is not None:
            self._sampler.sampler.set_epoch(epoch)

    def _trainer_or_none(self) -> L.Trainer | None:
        try:
            return self.trainer
        except RuntimeError:
            return None

    # -- evaluation -------------------------------------------------------------------------------
    @property
    def validation(self) -> EvalSet:
        """The validation users: histories aligned with their targets (built once)."""
        if self._validation is None:
            self._validation = EvalSet.of(self.data.val_history, self.data.val_targets)
        return self._validation

    def val_dataloader(self) -> DataLoader[Any]:
        """Batches of row positions into :attr:`validation`, sharded across DDP ranks; the module ranks
        and scores them through the evaluation protocol."""
        trainer = self._trainer_or_none()
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        # Length-sorted, then every world_size-th: each rank's batches pad little and weigh the same.
        index = np.argsort(self.validation.histories.lengths(), kind="stable")[rank::world]
        return DataLoader(
            _Rows(len(self.validation)),
            sampler=index.tolist(),
            batch_size=self.eval_cfg.batch_size,
            collate_fn=_as_rows,
            num_workers=0,
        )
