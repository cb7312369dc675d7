"""The LightningModule: wires model + masking + loss + optimiser, and validates with the shared metrics.

Kept thin on purpose: the model is a pure ``nn.Module`` (``recsys.model``), the loss is a small module
chosen by config (``recsys.model.losses``), and validation goes through the evaluation protocol
(:func:`recsys.evaluation.protocol.evaluate_batch`) that ``recsys evaluate`` uses.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytorch_lightning as L
import torch
from torch import nn

from recsys.config import RecsysConfig
from recsys.evaluation.metrics import RankingMetrics
from recsys.evaluation.protocol import evaluate_batch
from recsys.model.bert4rec import BERT4Rec
from recsys.model.losses import build_loss
from recsys.model.masking import mask_items
from recsys.training.datamodule import TrainBatch
from recsys.training.schedule import LRSchedule

__all__ = ["VAL_KS", "BERT4RecModule", "metric_key"]

VAL_KS = (10,)
"""Cut-offs tracked every epoch (NDCG@10 drives early stopping and the best checkpoint)."""


def metric_key(stage: str, name: str) -> str:
    """``("val", "ndcg@10") -> "val_ndcg_at_10"``: MLflow rejects '@' in metric names."""
    return f"{stage}_{name.replace('@', '_at_')}"


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (seed, epoch, batch, rank), stable across runs."""
    seq = np.random.SeedSequence([abs(int(p)) for p in parts])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Norm weights, biases and embeddings are not decayed (the usual BERT/AdamW practice)."""
    lowered = name.lower()
    return param.ndim < 2 or "norm" in lowered or "emb" in lowered or lowered.endswith("bias")


class BERT4RecModule(L.LightningModule):
    """Masked-item training and full-ranking validation of :class:`BERT4Rec`."""

    def __init__(
        self,
        n_items: int,
        cfg: RecsysConfig,
        item_counts: np.ndarray | None = None,
        total_steps: int = 1,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.total_steps = total_steps
        self.model = BERT4Rec(n_items, cfg.model)
        counts = torch.as_tensor(item_counts, dtype=torch.float32) if item_counts is not None else None
        self.loss_fn = build_loss(cfg.loss, n_items, counts)
        self._val_metrics = RankingMetrics(VAL_KS, n_items)
        self._tokens = 0
        self._epoch_t0 = 0.0
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._loss_count = 0

    @property
    def epoch_loss(self) -> float | None:
        """Mean training loss of the current (or just finished) epoch on this rank."""
        return float(self._loss_sum) / self._loss_count if self._loss_count else None

    @property
    def epoch_seconds(self) -> float:
        return time.perf_counter() - self._epoch_t0

    @property
    def epoch_tokens_per_s(self) -> float:
        """Non-padding input tokens per second in the current epoch (training steps only)."""
        return self._tokens / max(self.epoch_seconds, 1e-9)

    # -- training -----------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: TrainBatch, batch_idx: int) -> None:
        # Dropout draws from the global generator, which data loading also consumes: reseed per
        # (seed, epoch, batch, rank) so that an epoch restarted after a crash replays exactly.
        torch.manual_seed(_mix_seed(self.cfg.train.seed, self.current_epoch, batch_idx, self.global_rank, 1))

    def on_train_epoch_start(self) -> None:
        self._tokens = 0
        self._epoch_t0 = time.perf_counter()
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._loss_count = 0

    def training_step(self, batch: TrainBatch, batch_idx: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(
            _mix_seed(self.cfg.train.seed, self.current_epoch, batch_idx, self.global_rank, 2)
        )
        inputs, labels = mask_items(
            batch.items.cpu(), n_items=self.n_items, cfg=self.cfg.masking, generator=gen
        )
        inputs = inputs.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        selected = labels > 0  # [B, L]
        hidden = self.model.hidden_at(inputs, selected)  # [M, d]: the masked positions only
        loss = self.loss_fn(hidden, labels[selected], self.model, generator=gen)
        self._tokens += int((batch.items > 0).sum())
        self._loss_sum += loss.detach().double().cpu()
        self._loss_count += 1
        # The per-step loss is for the progress bar only: loggers get per-epoch values (step = epoch) from
        # recsys.training.fit.EpochHistory, so every logged metric has the same x-axis.
        self.log(
            "train_loss_step",
            loss,
            on_step=True,
            on_epoch=False,
            prog_bar=True,
            logger=False,
            batch_size=len(batch),
        )
        self.log(
            "tokens_per_s", self.epoch_tokens_per_s, on_step=True, on_epoch=False, prog_bar=True, logger=False
        )
        return loss

    # -- validation ---------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_metrics.reset()

    def validation_step(self, rows: np.ndarray, batch_idx: int) -> None:
        # The evaluation protocol: the same rank -> metrics path as `recsys evaluate` and `recommend`.
        datamodule = self.trainer.datamodule  # type: ignore[attr-defined]
        evaluate_batch(
            self._val_metrics,
            self.model.predict_next,
            datamodule.validation,
            np.asarray(rows, dtype=np.int64),
            max_history=self.model.max_len - 1,
            device=self.device,
        )

    def on_validation_epoch_end(self) -> None:
        metrics = self._val_metrics
        if not metrics.users:
            return
        sums = metrics.sums()
        keys = [f"{name}@{k}" for k in VAL_KS for name in ("ndcg", "hr")]
        stacked = torch.tensor([*(sums[key] for key in keys), metrics.users], dtype=torch.float64)
        # Sum over DDP ranks (each scored a disjoint shard of users) before dividing.
        if self.trainer.world_size > 1:
            stacked = self.trainer.strategy.reduce(stacked.to(self.device), reduce_op="sum").cpu()
        users = max(float(stacked[-1]), 1.0)
        for key, total in zip(keys, stacked[:-1].tolist(), strict=True):
            # Already equal on every rank; sync_dist (a mean of equal values, exact) only tells Lightning so.
            self.log(metric_key("val", key), total / users, prog_bar=True, logger=False, sync_dist=True)

    # -- optimisation -------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt, sched = self.cfg.train.optimizer, self.cfg.train.schedule
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if opt.decay_exclude and _no_decay(name, param) else decay).append(param)
        groups = [{"params": decay, "weight_decay": opt.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=opt.lr, betas=opt.betas)
        # An object, not a closure: LambdaLR checkpoints its state, and a time budget re-plans it.
        self.lr_schedule = LRSchedule.from_config(sched, self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
