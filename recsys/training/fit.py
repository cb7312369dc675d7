"""``fit()``: train BERT4Rec on a prepared dataset with Lightning and write the model bundle.

Library-level (no MLflow, no CLI): the ``train`` pipeline wraps it with tracking, the tuner calls it
per trial, a notebook calls it directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    ModelCheckpoint,
    TQDMProgressBar,
)
from pytorch_lightning.loggers import Logger

from recsys.config import RecsysConfig
from recsys.data.prepared import PreparedDataset
from recsys.training.bundle import save_bundle
from recsys.training.datamodule import SequenceDataModule, TrainingData
from recsys.training.memory import retain_freed_memory
from recsys.training.module import BERT4RecModule, metric_key

log = logging.getLogger("recsys.train")

__all__ = ["MONITOR", "EpochHistory", "FitResult", "dataset_fingerprint", "export_checkpoint", "fit"]

MONITOR = metric_key("val", "ndcg@10")


@dataclass
class FitResult:
    """What a training run produced."""

    bundle_path: Path | None
    best_checkpoint: Path | None
    last_checkpoint: Path
    best_val: dict[str, float]
    best_epoch: int
    epochs: int
    history: list[dict[str, float]]
    seconds: float
    module: BERT4RecModule = field(repr=False)
    data: TrainingData = field(repr=False)  # the events trained on and the validation targets
    stopped_early: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle_path) if self.bundle_path else None,
            "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 2),
            "stopped_early": self.stopped_early,
        }


class EpochHistory(Callback):
    """Collects one record per epoch (train loss, lr, validation metrics, speed).

    Kept in the checkpoint so a resumed run reports the whole learning curve.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        record: dict[str, float] = {"epoch": float(trainer.current_epoch)}
        for key in (MONITOR, metric_key("val", "hr@10")):
            if key in metrics:
                record[key] = metrics[key]
        if isinstance(pl_module, BERT4RecModule):
            record["epoch_seconds"] = pl_module.epoch_seconds
            record["epoch_tokens_per_s"] = pl_module.epoch_tokens_per_s
            if pl_module.epoch_loss is not None:
                record["train_loss"] = pl_module.epoch_loss
        if trainer.optimizers:
            record["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.records.append(record)
        if trainer.is_global_zero:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch")
            log.info("epoch %d/%d: %s", trainer.current_epoch + 1, trainer.max_epochs or 0, shown)
        for logger in trainer.loggers:
            logger.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=trainer.current_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict.get("records", []))


def dataset_fingerprint(dataset: PreparedDataset) -> str:
    """Identity of the training data: the source file's fingerprint plus the data-config key."""
    manifest = dataset.manifest
    payload = {"source": manifest.get("source", {}).get("fingerprint"), "config": manifest.get("config_key")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load_weights(module: BERT4RecModule, checkpoint: Path) -> None:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)


def _write_bundle(
    path: Path, module: BERT4RecModule, cfg: RecsysConfig, dataset: PreparedDataset, extra: dict[str, Any]
) -> Path:
    return save_bundle(
        path,
        module.model,
        cfg,
        dataset.users,
        dataset.items,
        dataset.item_counts(),
        data_fingerprint=dataset_fingerprint(dataset),
        extra=extra,
    )


def export_checkpoint(
    cfg: RecsysConfig, dataset: PreparedDataset, checkpoint: str | Path, path: str | Path
) -> Path:
    """Write the bundle of one Lightning checkpoint of a ``fit(cfg, dataset)`` run (``last.ckpt``, say,
    to evaluate the final epoch next to the best-validation bundle that ``fit`` wrote).

    With ``train.ema_decay`` the checkpoint's weights are the averaged ones, as in ``fit``'s bundle.
    """
    module = BERT4RecModule(dataset.n_items, cfg, dataset.item_counts(), total_steps=1)
    _load_weights(module, Path(checkpoint))
    return _write_bundle(Path(path), module, cfg, dataset, {"checkpoint": str(checkpoint)})


def fit(
    cfg: RecsysConfig,
    dataset: PreparedDataset,
    *,
    resume: bool = False,
    loggers: Sequence[Logger] = (),
    callbacks: Sequence[Callback] = (),
    write_bundle: bool = True,
) -> FitResult:
    """Train on the events of :func:`training_data`, validate every epoch, keep best and last checkpoints.

    With ``resume=True`` training continues from ``<output_dir>/checkpoints/last.ckpt`` (if present);
    because batches, masks and dropout are seeded per epoch, the result equals an uninterrupted run.
    """
    tcfg = cfg.train
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    retain_freed_memory()  # every step reallocates the same tensors: reuse the pages (memory.py)
    pl.seed_everything(tcfg.seed, workers=True, verbose=False)
    out = Path(tcfg.output_dir)
    ckpt_dir = out / "checkpoints"
    datamodule = SequenceDataModule(dataset, cfg.model, cfg.masking, tcfg, cfg.eval)
    world = _world_size(tcfg)
    steps_per_epoch = datamodule.train_batches_per_epoch(world)
    module = BERT4RecModule(
        dataset.n_items, cfg, dataset.item_counts(), total_steps=max(1, steps_per_epoch * tcfg.max_epochs)
    )
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=MONITOR,
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=True,  # after validation and EpochHistory: the epoch is complete
    )
    # last.ckpt after every epoch, whether or not it improved (what --resume continues from). A separate
    # callback: ModelCheckpoint(save_last=True) writes "last" only when it also writes a top-k checkpoint.
    latest = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=True,
    )
    history = EpochHistory()
    all_callbacks: list[Callback] = [
        checkpoint,
        latest,
        EarlyStopping(monitor=MONITOR, mode="max", patience=tcfg.patience, check_on_train_epoch_end=False),
        history,
        *callbacks,
    ]
    if tcfg.ema_decay is not None:
        # Lightning's EMA: validation (so early stopping and best.ckpt) sees the averaged weights, every
        # checkpoint's state_dict holds them (the raw weights ride along for --resume), and training ends
        # with them in the module, so the bundle ships them.
        all_callbacks.append(EMAWeightAveraging(decay=tcfg.ema_decay))
    if tcfg.progress_bar:
        all_callbacks.append(TQDMProgressBar(refresh_rate=max(1, steps_per_epoch // 50)))
    trainer = pl.Trainer(
        max_epochs=tcfg.max_epochs,
        max_time=timedelta(minutes=tcfg.max_time_minutes) if tcfg.max_time_minutes else None,
        accelerator=tcfg.accelerator,
        devices=tcfg.devices,
        strategy=tcfg.strategy,
        num_nodes=tcfg.num_nodes,
        precision=tcfg.precision,
        gradient_clip_val=tcfg.grad_clip,
        check_val_every_n_epoch=tcfg.val_every_n_epochs,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        callbacks=all_callbacks,
        logger=list(loggers) if loggers else False,
        enable_progress_bar=tcfg.progress_bar,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the bucket sampler shards batches across ranks itself
        deterministic=False,
        default_root_dir=str(out),
    )
    last = ckpt_dir / "last.ckpt"
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume and last.is_file() else None)
    seconds = time.perf_counter() - t0

    best_path = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    if best_path is not None and best_path.is_file():
        _load_weights(module, best_path)
    if not history.records and last.is_file():
        # ddp_spawn trains in child processes: the parent's callback never saw an epoch, but the
        # last checkpoint carries the history.
        state = torch.load(last, map_location="cpu", weights_only=True)
        history.load_state_dict(state.get("callbacks", {}).get(history.state_key, {}))
    best_val: dict[str, float] = {}
    best_epoch = -1
    if history.records:
        scored = [r for r in history.records if MONITOR in r]
        if scored:
            best = max(scored, key=lambda r: r[MONITOR])
            best_val = {k: v for k, v in best.items() if k.startswith("val_")}
            best_epoch = int(best["epoch"])
    bundle_path: Path | None = None
    if write_bundle and trainer.is_global_zero:
        bundle_path = _write_bundle(
            out / "model", module, cfg, dataset, {"best_val": best_val, "best_epoch": best_epoch}
        )
    stopped = bool(trainer.early_stopping_callback and trainer.early_stopping_callback.stopped_epoch > 0)
    return FitResult(
        bundle_path=bundle_path,
        best_checkpoint=best_path,
        last_checkpoint=last,
        best_val=best_val,
        best_epoch=best_epoch,
        epochs=max(trainer.current_epoch, len(history.records)),
        history=history.records,
        seconds=seconds,
        module=module,
        data=datamodule.data,
        stopped_early=stopped,
    )


def _world_size(tcfg: Any) -> int:
    devices = tcfg.devices
    n = devices if isinstance(devices, int) and devices > 0 else 1
    return n * tcfg.num_nodes if tcfg.strategy not in ("auto", "single_device") or n > 1 else 1
