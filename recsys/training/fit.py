"""``fit()``: train BERT4Rec on a prepared dataset with Lightning and write the model bundle.

Library-level (no MLflow, no CLI): the ``train`` pipeline wraps it with tracking, the tuner calls it
per trial, a notebook calls it directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import (
    Callback,
    EMAWeightAveraging,
    ModelCheckpoint,
    TQDMProgressBar,
)
from pytorch_lightning.loggers import Logger

from recsys.config import RecsysConfig, TrainConfig
from recsys.data.fingerprint import dataset_fingerprint
from recsys.data.prepared import PreparedDataset
from recsys.training.auto import resolve_auto
from recsys.training.budget import TimeBudget
from recsys.training.bundle import save_bundle
from recsys.training.datamodule import SequenceDataModule, TrainingData
from recsys.training.divergence import DivergenceGuard, check_finite_weights
from recsys.training.features import ModelFeatures, load_features
from recsys.training.lock import output_lock
from recsys.training.memory import retain_freed_memory
from recsys.training.module import BERT4RecModule, metric_key
from recsys.training.precision import resolve_precision
from recsys.training.resume import ResumeRecord, check_resume
from recsys.training.runtime import apply_threads, world_size
from recsys.training.schedule import warmup_steps
from recsys.training.stopping import SmoothedEarlyStopping
from recsys.training.warm_start import warm_start

log = logging.getLogger("recsys.train")

__all__ = ["DEFAULT_EPOCHS", "MONITOR", "EpochHistory", "FitResult", "export_checkpoint", "fit"]

MONITOR = metric_key("val", "ndcg@10")
DEFAULT_EPOCHS = 50
"""The schedule's length when ``train.max_epochs`` is null and there is no time budget (with one, the
provisional length that sets the warm-up pace of the first epoch, before the budget fits the schedule)."""
_UNBOUNDED_EPOCHS = 1_000_000
"""Lightning's epoch limit under a budget with no ``max_epochs``, until the budget sets the real one."""


@dataclass
class FitResult:
    """What a training run produced."""

    bundle_path: Path | None
    best_checkpoint: Path | None
    last_checkpoint: Path
    best_val: dict[str, float]
    best_epoch: int  # counted from 1, as in the log; 0 when no epoch was validated
    epochs: int
    history: list[dict[str, float]]
    seconds: float
    module: BERT4RecModule = field(repr=False)
    data: TrainingData = field(repr=False)  # the events trained on and the validation targets
    config: RecsysConfig = field(repr=False)  # the config trained with, every `auto` resolved
    stopped_early: bool = False
    precision: str = "32"  # the resolved Lightning precision ("32", "bf16-mixed", ...)
    derived: dict[str, Any] = field(default_factory=dict)  # values set from the data or the budget

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle_path) if self.bundle_path else None,
            "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 2),
            "stopped_early": self.stopped_early,
            "precision": self.precision,
            "derived": self.derived,
        }


class EpochHistory(Callback):
    """Collects one record per epoch (train loss, lr, validation metrics, speed) and logs it as one line.

    Epochs are counted from 1 here, as a person reads them (``epoch 9/60`` in the log, ``best_epoch`` 9 and
    step 9 in MLflow are the same epoch); Lightning's own ``current_epoch`` counts from 0. Kept in the
    checkpoint so a resumed run reports the whole learning curve.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        epoch = trainer.current_epoch + 1
        record: dict[str, float] = {"epoch": float(epoch)}
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
            log.info("epoch %d/%d: %s", epoch, trainer.max_epochs or 0, shown)
        for logger in trainer.loggers:
            logger.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict.get("records", []))


class _EpochBar(TQDMProgressBar):
    """Lightning's bar, with the epoch counted from 1 as in the log line below it (``Epoch 1/60``)."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


def _load_weights(module: BERT4RecModule, checkpoint: Path) -> None:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)


def _write_bundle(
    path: Path,
    module: BERT4RecModule,
    cfg: RecsysConfig,
    dataset: PreparedDataset,
    features: ModelFeatures | None,
    extra: dict[str, Any],
) -> Path:
    return save_bundle(
        path,
        module.model,
        cfg,
        dataset.users,
        dataset.items,
        dataset.item_counts(),
        data_fingerprint=dataset_fingerprint(dataset),
        features=None if features is None else features.vocabulary,
        extra=extra,
    )


def _module(
    cfg: RecsysConfig, dataset: PreparedDataset, total_steps: int
) -> tuple[BERT4RecModule, ModelFeatures | None]:
    """The LightningModule for ``dataset``, with the side features of ``data.item_features`` if any."""
    features = load_features(cfg.data, dataset.items)
    index = None if features is None else features.index
    module = BERT4RecModule(dataset.n_items, cfg, dataset.item_counts(), total_steps, features=index)
    return module, features


def export_checkpoint(
    cfg: RecsysConfig, dataset: PreparedDataset, checkpoint: str | Path, path: str | Path
) -> Path:
    """Write the bundle of one Lightning checkpoint of a ``fit(cfg, dataset)`` run (``last.ckpt``, say,
    to evaluate the final epoch next to the best-validation bundle that ``fit`` wrote).

    With ``train.ema_decay`` the checkpoint's weights are the averaged ones, as in ``fit``'s bundle.
    """
    cfg, _ = resolve_auto(cfg, dataset)
    module, features = _module(cfg, dataset, total_steps=1)
    _load_weights(module, Path(checkpoint))
    return _write_bundle(Path(path), module, cfg, dataset, features, {"checkpoint": str(checkpoint)})


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

    With ``resume=True`` training continues from ``<output_dir>/checkpoints/last.ckpt``, which must exist
    and come from the same model, objective and data (:func:`~recsys.training.resume.check_resume`);
    because batches, masks and dropout are seeded per epoch, the result equals an uninterrupted run.
    The output directory is locked for the whole call (:func:`~recsys.training.lock.output_lock`), and a
    diverged run raises :class:`~recsys.training.divergence.TrainingDivergedError` without writing a bundle.
    """
    with output_lock(cfg.train.output_dir):
        return _fit(
            cfg, dataset, resume=resume, loggers=loggers, callbacks=callbacks, write_bundle=write_bundle
        )


def _fit(
    cfg: RecsysConfig,
    dataset: PreparedDataset,
    *,
    resume: bool,
    loggers: Sequence[Logger],
    callbacks: Sequence[Callback],
    write_bundle: bool,
) -> FitResult:
    """The body of :func:`fit` (long, but one straight sequence: set up, train, pick the best, write)."""
    cfg, derived = resolve_auto(cfg, dataset)
    tcfg, runtime = cfg.train, cfg.runtime
    apply_threads(runtime)
    retain_freed_memory()  # every step reallocates the same tensors: reuse the pages (memory.py)
    precision = resolve_precision(runtime)
    L.seed_everything(tcfg.seed, workers=True, verbose=False)
    out = Path(tcfg.output_dir)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    fingerprint = dataset_fingerprint(dataset)
    if resume:
        check_resume(cfg, last, fingerprint)
    datamodule = SequenceDataModule(
        dataset, cfg.model, cfg.masking, tcfg, cfg.eval, num_workers=runtime.num_workers
    )
    world = world_size(runtime)
    steps_per_epoch = datamodule.train_batches_per_epoch(world)
    epochs = tcfg.max_epochs or DEFAULT_EPOCHS
    module, features = _module(cfg, dataset, total_steps=max(1, steps_per_epoch * epochs))
    if features is not None:
        derived.update({f"data.item_features.{k}": v for k, v in features.summary.items()})
    if tcfg.init_from is not None and not resume:  # a resumed run's checkpoint has the weights
        carried = warm_start(
            module.model, dataset.items, tcfg.init_from, None if features is None else features.vocabulary
        )
        derived.update({f"train.init_from.{k}": v for k, v in carried.items() if k != "bundle"})
    module.global_batch = tcfg.resolved_batch_size() * world
    if tcfg.optimizer.lr_scaling != "none":
        derived["train.optimizer.lr_used"] = tcfg.optimizer.scaled_lr(module.global_batch)
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
    budget = _time_budget(tcfg, steps_per_epoch)
    stopping = SmoothedEarlyStopping(
        MONITOR,
        tcfg.patience,
        window=tcfg.early_stop_window,
        min_fraction=tcfg.early_stop_min_fraction,
        on_plateau=tcfg.on_plateau,
        decay_fraction=tcfg.plateau_decay_fraction,
    )
    # The budget before the history, so that the epoch log line shows the fitted length.
    all_callbacks: list[Callback] = [
        checkpoint,
        latest,
        *budget,
        stopping,
        history,
        DivergenceGuard(),
        ResumeRecord(cfg, fingerprint),
        *callbacks,
    ]
    if tcfg.ema_decay is not None:
        # Lightning's EMA: validation (so early stopping and best.ckpt) sees the averaged weights, every
        # checkpoint's state_dict holds them (the raw weights ride along for --resume), and training ends
        # with them in the module, so the bundle ships them.
        all_callbacks.append(EMAWeightAveraging(decay=tcfg.ema_decay))
    if runtime.progress_bar:
        all_callbacks.append(_EpochBar(refresh_rate=max(1, steps_per_epoch // 50)))
    trainer = L.Trainer(
        max_epochs=_UNBOUNDED_EPOCHS if budget and tcfg.max_epochs is None else epochs,
        max_time=timedelta(minutes=tcfg.max_time_minutes) if tcfg.max_time_minutes else None,
        accelerator=runtime.accelerator,
        devices=runtime.devices,
        strategy=runtime.strategy,
        num_nodes=runtime.num_nodes,
        precision=precision,  # type: ignore[arg-type]  # a Lightning precision string
        gradient_clip_val=tcfg.optimizer.grad_clip,
        check_val_every_n_epoch=tcfg.val_every_n_epochs,
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        callbacks=all_callbacks,
        logger=list(loggers) if loggers else False,
        enable_progress_bar=runtime.progress_bar,
        enable_model_summary=False,
        use_distributed_sampler=False,  # the bucket sampler shards batches across ranks itself
        deterministic=False,
        default_root_dir=str(out),
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    seconds = time.perf_counter() - t0

    best_path = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    if best_path is not None and best_path.is_file():
        _load_weights(module, best_path)
    if not history.records and last.is_file():
        # ddp_spawn trains in child processes: the parent's callbacks never saw an epoch, but the
        # last checkpoint carries the history, the fitted schedule and the stopping state.
        saved = torch.load(last, map_location="cpu", weights_only=True).get("callbacks", {})
        for callback in (history, stopping, *budget):
            callback.load_state_dict(saved.get(callback.state_key, {}))
    best_val: dict[str, float] = {}
    best_epoch = 0
    if history.records:
        scored = [r for r in history.records if MONITOR in r]
        if scored:
            best = max(scored, key=lambda r: r[MONITOR])
            best_val = {k: v for k, v in best.items() if k.startswith("val_")}
            best_epoch = int(best["epoch"])
    check_finite_weights(module)
    bundle_path: Path | None = None
    if write_bundle and trainer.is_global_zero:
        bundle_path = _write_bundle(
            out / "model", module, cfg, dataset, features, {"best_val": best_val, "best_epoch": best_epoch}
        )
    derived.update(_schedule_values(tcfg, steps_per_epoch, epochs, budget))
    if stopping.decay_epoch is not None:
        derived["train.plateau_decay_after_epoch"] = stopping.decay_epoch
    stopped = stopping.stopped_epoch is not None
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
        config=cfg,
        stopped_early=stopped,
        precision=precision,
        derived=derived,
    )


def _time_budget(tcfg: TrainConfig, steps_per_epoch: int) -> list[TimeBudget]:
    """The budget callback, in a list (empty without ``train.time_budget_minutes``)."""
    if tcfg.time_budget_minutes is None:
        return []
    return [TimeBudget(tcfg.time_budget_minutes, steps_per_epoch, tcfg.schedule, tcfg.max_epochs)]


def _schedule_values(
    tcfg: TrainConfig, steps_per_epoch: int, epochs: int, budget: list[TimeBudget]
) -> dict[str, Any]:
    """The schedule the run was given (``train.*`` keys): fitted by the budget, or from the config."""
    if budget:
        fitted = budget[0].summary()
        return {f"train.{k}": v for k, v in fitted.items() if k != "time_budget_minutes"}
    total = epochs * steps_per_epoch
    return {
        "train.epochs": epochs,
        "train.warmup_steps": warmup_steps(tcfg.schedule, total),
        "train.total_steps": total,
    }
