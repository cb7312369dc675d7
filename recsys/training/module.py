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
from recsys.model.bert4rec import BERT4Rec, FeatureIndex
from recsys.model.electra import ReplacedItemDetection
from recsys.model.losses import build_loss, resolve_loss
from recsys.model.masking import mask_items
from recsys.training.datamodule import TrainBatch
from recsys.training.optim import RowSparseAdamW, clip_grad_norm_
from recsys.training.schedule import LRSchedule

__all__ = ["VAL_KS", "BERT4RecModule", "metric_key"]

VAL_KS = (10,)
"""Cut-offs tracked every epoch (NDCG@10 drives early stopping and the best checkpoint)."""


def metric_key(stage: str, name: str) -> str:
    """``("val", "ndcg@10") -> "val_ndcg_at_10"``: MLflow rejects '@' in metric names."""
    return f"{stage}_{name.replace('@', '_at_')}"


def _mix_seeds(*parts: int, n: int = 2) -> list[int]:
    """``n`` 63-bit seeds from several integers (seed, epoch, batch, rank), stable across runs."""
    seq = np.random.SeedSequence([abs(int(p)) for p in parts])
    return [int(word >> np.uint64(1)) for word in seq.generate_state(n, dtype=np.uint64)]


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Norm weights, biases and embeddings are not decayed (the usual BERT/AdamW practice)."""
    lowered = name.lower()
    return param.ndim < 2 or "norm" in lowered or "emb" in lowered or lowered.endswith("bias")


_ITEM_TABLES = ("model.item_embedding.weight", "model.output_embedding")
"""The ``[V, e]`` item tables, by parameter name (``train.optimizer.item_weight_decay``)."""


class BERT4RecModule(L.LightningModule):
    """Masked-item training and full-ranking validation of :class:`BERT4Rec`."""

    def __init__(
        self,
        n_items: int,
        cfg: RecsysConfig,
        item_counts: np.ndarray | None = None,
        total_steps: int = 1,
        features: FeatureIndex | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = n_items
        self.total_steps = total_steps
        self.model = BERT4Rec(n_items, cfg.model, features)
        counts = torch.as_tensor(item_counts, dtype=torch.float32) if item_counts is not None else None
        self.loss_cfg = resolve_loss(cfg.loss, n_items)  # what `loss.kind: auto` chose, for reports
        self.loss_fn = build_loss(self.loss_cfg, n_items, counts)
        # ELECTRA: a generator sharing the item table, and a replaced-item head (training only).
        self.electra = (
            ReplacedItemDetection(self.model, cfg.model.electra) if cfg.model.electra.enabled else None
        )
        self._val_metrics = RankingMetrics(VAL_KS, n_items)
        self._tokens = 0
        self._epoch_t0 = 0.0
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._loss_count = 0
        self._step_seed = 0
        self.step_targets = 0
        # Sequences per optimiser step, all ranks (fit sets it).
        self.global_batch = cfg.train.resolved_batch_size()

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

    def setup(self, stage: str) -> None:
        # A loss that scores a sample of the catalogue gets row-sparse item-table gradients (see
        # BERT4Rec.set_sparse_item_grad). Not under DDP, whose gradient buckets are dense.
        world = self.trainer.world_size if self._trainer is not None else 1
        # Nor with ELECTRA, whose generator reads the same item table densely, nor with side features,
        # which recompose the whole table every step.
        sparse = (
            not self.loss_fn.touches_every_item
            and world == 1
            and self.electra is None
            and self.model.n_features == 0
        )
        self.model.set_sparse_item_grad(sparse)

    # -- training -----------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: TrainBatch, batch_idx: int) -> None:
        # Dropout draws from the global generator, which data loading also consumes: reseed per
        # (seed, epoch, batch, rank) so that an epoch restarted after a crash replays exactly. Masking
        # and negative sampling get their own generator from the second seed.
        dropout_seed, self._step_seed = _mix_seeds(
            self.cfg.train.seed, self.current_epoch, batch_idx, self.global_rank
        )
        if self.device.type == "cpu":
            # torch.manual_seed also queues a lazy seed for every accelerator backend, each call
            # formatting a traceback: 0.3 ms a step, more than a whole dropout layer here.
            torch.default_generator.manual_seed(dropout_seed)
        else:
            torch.manual_seed(dropout_seed)

    def on_train_epoch_start(self) -> None:
        self._tokens = 0
        self._epoch_t0 = time.perf_counter()
        self._loss_sum = torch.zeros((), dtype=torch.float64)
        self._loss_count = 0

    def training_step(self, batch: TrainBatch, batch_idx: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self._step_seed)
        inputs, labels = mask_items(
            batch.items.cpu(), n_items=self.n_items, cfg=self.cfg.masking, generator=gen
        )
        self.step_targets = int((labels > 0).sum())  # positions scored by this step (benchmarks count FLOPs)
        inputs = inputs.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        selected = labels > 0  # [B, L]
        hidden = self.model.hidden_at(inputs, selected)  # [M, d]: the masked positions only
        loss = self.loss_fn(hidden, labels[selected], self.model, generator=gen)
        if self.electra is not None:
            items = batch.items.to(self.device, non_blocking=True)
            g_loss, d_loss, _ = self.electra(self.model, items, inputs, selected, self.loss_fn, gen)
            loss = loss + g_loss + self.cfg.model.electra.weight * d_loss
        self._tokens += int((batch.items > 0).sum())
        self._loss_sum += loss.detach().double().cpu()
        self._loss_count += 1
        self._log_step(loss, batch_idx)
        return loss

    def _log_step(self, loss: torch.Tensor, batch_idx: int) -> None:
        """Every ``log_every_n_steps`` batches: loss and speed to the progress bar only. Loggers get
        per-epoch values (step = epoch) from ``recsys.training.fit.EpochHistory``, so every logged metric
        has the same x-axis.

        Not ``self.log`` on every step: it costs about 0.8 ms a call (measured on the e-commerce
        shape), and two calls a step were 8% of a sampled-softmax step.
        """
        trainer = self._trainer
        every = int(getattr(trainer, "log_every_n_steps", 0) or 0)  # set by Trainer.__init__
        if not every or batch_idx % every:
            return
        value = float(loss.detach())
        if self.cfg.runtime.progress_bar:
            self.log("train_loss_step", value, prog_bar=True, logger=False)
            self.log("tokens_per_s", self.epoch_tokens_per_s, prog_bar=True, logger=False)

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
        item_decay = opt.resolved_item_weight_decay()
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        items: list[nn.Parameter] = []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if item_decay is not None and name in _ITEM_TABLES:
                items.append(param)
            elif opt.decay_exclude and _no_decay(name, param):
                no_decay.append(param)
            else:
                decay.append(param)
        groups = [{"params": decay, "weight_decay": opt.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        if items:
            groups.append({"params": items, "weight_decay": item_decay})
        # Fused: one pass over each parameter and its moments instead of a dozen, and no temporaries.
        # Not under mixed precision: Lightning refuses to clip the gradients of an optimizer that
        # unscales them itself, which is what a fused AdamW declares.
        mixed = "mixed" in str(self.trainer.precision) if self._trainer is not None else False
        fused = self.device.type in ("cpu", "cuda") and not mixed
        lr = opt.scaled_lr(self.global_batch)  # RoBERTa's larger batches (optimizer.lr_scaling)
        optimizer = RowSparseAdamW(groups, lr=lr, betas=opt.betas, fused=fused)
        # An object, not a closure: LambdaLR checkpoints its state, and a time budget re-plans it.
        self.lr_schedule = LRSchedule.from_config(sched, self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if (
            gradient_clip_val
            and gradient_clip_algorithm in (None, "norm")
            and any(p.grad.is_sparse for p in params)
        ):
            clip_grad_norm_(params, float(gradient_clip_val))  # torch's clip_grad_norm_ rejects sparse
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
