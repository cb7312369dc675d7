"""Distributed batch top-k through Lightning's predict loop, into atomic parquet parts.

Used by :func:`recsys.inference.batch.write_recommendations` when ``runtime`` asks for several devices or
processes: every rank ranks every ``world_size``-th batch of one shared plan (:class:`TopKModule`, through
the one ranking path) and writes its own ``part-rank{r}-*.parquet`` files into the shared staging
directory; rank 0 writes the manifest and publishes after a barrier (:class:`PartsWriter`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from recsys.config import RecsysConfig
from recsys.console import quiet_third_party
from recsys.data.sequences import Sequences
from recsys.inference.ids import IdTable
from recsys.inference.parts import PartBuffer
from recsys.inference.recommender import Recommender
from recsys.inference.topk import TopK, rank
from recsys.inference.writer import (
    OutputManifest,
    PartWriter,
    create_staging,
    discard,
    publish,
    read_manifest,
    write_manifest,
)
from recsys.model.bert4rec import BERT4Rec

__all__ = ["PartsWriter", "TopKModule", "predict_parts"]


class _Batches(Dataset[np.ndarray]):
    """One item per batch: the history rows of that batch (already planned and sharded)."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.batches[i]


class TopKModule(L.LightningModule):
    """Thin Lightning wrapper: ``predict_step`` returns the :class:`TopK` of one planned batch of rows.

    Each rank takes every ``world_size``-th batch of the shared plan (batches are length-sorted, so the
    stride also balances the work), so no DistributedSampler is needed and no row is repeated.
    """

    def __init__(
        self,
        model: BERT4Rec,
        histories: Sequences,
        plan: list[np.ndarray],
        k: int,
        *,
        exclude_seen: bool,
        blocked: torch.Tensor | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.histories = histories
        self.plan = plan
        self.k = k
        self.exclude_seen = exclude_seen
        # A buffer, so that Lightning moves it to the device with the model (not saved: nothing is).
        self.blocked: torch.Tensor | None
        self.register_buffer("blocked", None if blocked is None else blocked.cpu(), persistent=False)

    def predict_dataloader(self) -> DataLoader[np.ndarray]:
        rank_, world = self.trainer.global_rank, self.trainer.world_size
        # batch_size=None: each dataset item already is a batch; default_convert makes it a tensor.
        return DataLoader(_Batches(self.plan[rank_::world]), batch_size=None, shuffle=False)

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> TopK:
        return rank(
            self.model.predict_next,
            self.histories,
            batch.cpu().numpy(),
            self.k,
            max_history=self.model.max_len - 1,
            exclude_seen=self.exclude_seen,
            blocked=self.blocked,
            n_cols=self.model.vocab_size,
            device=self.device,
        )


class PartsWriter(L.Callback):
    """Every rank buffers its TopK batches into its own parts; rank 0 then writes the manifest and
    publishes the staging directory, after a barrier so that every rank's parts are on disk."""

    def __init__(
        self, staging: Path, out: Path, per_part: int, to_table: IdTable, manifest: OutputManifest
    ) -> None:
        super().__init__()
        self.staging = staging
        self.out = out
        self.per_part = per_part
        self.to_table = to_table
        self.manifest = manifest
        self._buffer: PartBuffer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # With the ``ddp`` launcher every rank ran the job and made its own staging directory: use rank 0's.
        shared = Path(trainer.strategy.broadcast(str(self.staging), src=0))
        if shared != self.staging:
            discard(self.staging)
            self.staging = shared
        self._buffer = PartBuffer(
            PartWriter(self.staging, rank=trainer.global_rank), self.per_part, self.to_table
        )

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        assert self._buffer is not None
        self._buffer.add(outputs)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self._buffer is not None
        self._buffer.flush()
        trainer.strategy.barrier("recommend-parts-written")
        if trainer.is_global_zero:
            write_manifest(self.staging, {**self.manifest, "world_size": trainer.world_size})
            publish(self.staging, self.out)
        trainer.strategy.barrier("recommend-published")


def predict_parts(
    recommender: Recommender,
    histories: Sequences,
    plan: list[np.ndarray],
    out: Path,
    *,
    cfg: RecsysConfig,
    k: int,
    exclude_seen: bool,
    blocked: torch.Tensor | None,
    to_table: IdTable,
    per_part: int,
    manifest: OutputManifest,
) -> OutputManifest:
    """Lightning's predict loop with the ``runtime`` accelerator, devices and strategy over ``plan``."""
    t = cfg.runtime
    staging = create_staging(out)
    try:
        module = TopKModule(recommender.model, histories, plan, k, exclude_seen=exclude_seen, blocked=blocked)
        with quiet_third_party():
            trainer = L.Trainer(
                accelerator=t.accelerator,
                devices=t.devices,
                strategy=t.strategy,
                num_nodes=t.num_nodes,
                logger=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                enable_progress_bar=t.progress_bar,
                use_distributed_sampler=False,  # the module shards the batch plan by rank itself
                callbacks=[PartsWriter(staging, out, per_part, to_table, manifest)],
            )
            trainer.predict(module, return_predictions=False)
    except BaseException:
        discard(staging)
        raise
    if staging.exists():  # the loop ended without publishing: never leave the staging directory behind
        discard(staging)
        raise RuntimeError(f"the predict loop ended without publishing {out}")
    return read_manifest(out)
