"""The config sections: one pydantic class per concern, every field with a one-line description."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

__all__ = [
    "AUTO_SAMPLED_ABOVE",
    "AutoLoss",
    "CleaningConfig",
    "ColumnsConfig",
    "ConfigError",
    "DataConfig",
    "ElectraConfig",
    "EvalConfig",
    "FullSoftmaxLoss",
    "GBCELoss",
    "InferenceConfig",
    "ItemFeaturesConfig",
    "LossConfig",
    "MaskingConfig",
    "ModelConfig",
    "OptimizerConfig",
    "Precision",
    "ReaderFormat",
    "RecsysConfig",
    "ResolvedFormat",
    "RuntimeConfig",
    "SampledSoftmaxLoss",
    "ScheduleConfig",
    "SourceConfig",
    "SplitConfig",
    "TrackingConfig",
    "TrainConfig",
]


from recsys.config.base import ConfigError
from recsys.config.base import Section as _Section
from recsys.config.data import (
    CleaningConfig,
    ColumnsConfig,
    DataConfig,
    ItemFeaturesConfig,
    ReaderFormat,
    ResolvedFormat,
    SourceConfig,
    SplitConfig,
)
from recsys.config.model import ElectraConfig, MaskingConfig, ModelConfig


class FullSoftmaxLoss(_Section):
    kind: Literal["softmax"] = "softmax"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing for cross-entropy.")


class SampledSoftmaxLoss(_Section):
    kind: Literal["sampled_softmax"] = "sampled_softmax"
    n_negatives: int = Field(256, ge=1, description="Negatives shared by the batch.")
    sampling: Literal["uniform", "popularity"] = Field("uniform", description="Negative distribution.")
    logq_correction: bool = Field(True, description="Subtract log sampling probability (logQ).")


class GBCELoss(_Section):
    kind: Literal["gbce"] = "gbce"
    n_negatives: int = Field(256, ge=1, description="Uniform negatives per masked position.")
    t: float = Field(0.75, ge=0.0, le=1.0, description="gBCE calibration parameter t (Petrov & Macdonald).")


AUTO_SAMPLED_ABOVE = 20_000
"""Where sampled softmax became clearly (2x) faster per epoch than full softmax (see AutoLoss)."""
AUTO_NEGATIVES = 1024


class AutoLoss(_Section):
    kind: Literal["auto"] = Field(
        "auto", description="auto: full softmax for small catalogues, sampled softmax for large ones."
    )
    sampled_above: int = Field(
        AUTO_SAMPLED_ABOVE,
        ge=0,
        description=(
            "Catalogues of more items than this train with sampled softmax, smaller ones with exact full "
            "softmax. 20,000: where sampled softmax (these settings) became 2x faster per epoch than full "
            "softmax on one AMD EPYC core, for e-commerce-length and for ML-1M-length histories alike "
            "(1.5x at 10,000 items, no gain at 2,000; `bench/bench_train_epoch.py --items N --set "
            "loss.sampled_above=0`)."
        ),
    )
    n_negatives: int = Field(
        AUTO_NEGATIVES, ge=1, description="Negatives shared by the batch when sampled softmax is chosen."
    )
    sampling: Literal["uniform", "popularity"] = Field(
        "popularity", description="Negative distribution when sampled softmax is chosen (logQ-corrected)."
    )

    def resolve(self, n_items: int) -> FullSoftmaxLoss | SampledSoftmaxLoss:
        """The loss this setting means for a catalogue of ``n_items`` items."""
        if n_items > self.sampled_above:
            return SampledSoftmaxLoss(
                n_negatives=self.n_negatives, sampling=self.sampling, logq_correction=True
            )
        return FullSoftmaxLoss()


LossConfig = Annotated[
    AutoLoss | FullSoftmaxLoss | SampledSoftmaxLoss | GBCELoss, Field(discriminator="kind")
]


class OptimizerConfig(_Section):
    lr: float = Field(2e-3, gt=0.0, allow_inf_nan=False, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay.")
    decay_exclude: bool = Field(True, description="Exclude norms, biases and embeddings from weight decay.")
    item_weight_decay: Annotated[float, Field(ge=0.0)] | Literal["auto"] | None = Field(
        "auto",
        description=(
            "AdamW weight decay on the item table(s) alone (the input embedding and an untied output "
            "table), in place of what decay_exclude gives them; null: as decay_exclude says. Sparse logs "
            "(few events per item) overfit the item rows first. auto: 1.0 with item side features "
            "(data.item_features; the decay leans each item on its features' shared rows, which are not "
            "decayed), else null."
        ),
    )

    def resolved_item_weight_decay(self) -> float | None:
        """``item_weight_decay`` as a number or None; an unresolved ``auto`` is an error."""
        if self.item_weight_decay == "auto":
            raise ValueError("train.optimizer.item_weight_decay is 'auto': resolve it against the data first")
        return self.item_weight_decay

    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas.")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Gradient-norm clipping; null disables.")
    lr_scaling: Literal["none", "sqrt", "linear"] = Field(
        "none",
        description=(
            "RoBERTa-style large batches: the lr used is lr x (global batch / lr_reference_batch), to "
            "the power 1/2 (sqrt) or 1 (linear); the global batch is batch_size x devices x nodes. "
            "The lr used is logged."
        ),
    )
    lr_reference_batch: int = Field(
        128, ge=1, description="lr_scaling: the global batch size that lr is tuned for."
    )

    def scaled_lr(self, global_batch: int) -> float:
        """The peak learning rate for a global batch of ``global_batch`` sequences (see lr_scaling)."""
        power = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}[self.lr_scaling]
        return self.lr * (global_batch / self.lr_reference_batch) ** power


class ScheduleConfig(_Section):
    kind: Literal["constant", "linear", "cosine"] = Field(
        "cosine", description="Learning-rate decay after warm-up."
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear warm-up steps (null: see warmup_fraction)."
    )
    warmup_fraction: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description=(
            "Warm-up as a share of the schedule's steps (of the fitted schedule under a time budget); "
            "replaces warmup_steps when set. Neither set: 5% of the schedule."
        ),
    )
    min_lr_ratio: float = Field(0.02, ge=0.0, le=1.0, description="Final lr as a share of lr (decay).")


class TrainConfig(_Section):
    seed: int = Field(42, description="Seed for masking, initialisation, shuffling and sampling.")
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description=(
            "Sequences per batch (per device). auto: 128, halved (down to 32) while an epoch would have "
            "fewer than 100 optimizer steps, so small logs still get enough updates (ML-1M: 8.7k "
            "windows, 64, chosen by validation: 0.1694 against 0.1667 at 128; the Amazon sets: 128); "
            "the value used is logged."
        ),
    )
    max_epochs: int | None = Field(
        None,
        ge=1,
        description=(
            "Epochs of the schedule; null: 50, or with time_budget_minutes as many as the budget holds "
            "(a number set here then bounds the fitted schedule)."
        ),
    )
    time_budget_minutes: float | None = Field(
        None,
        gt=0,
        description=(
            "Fit the whole schedule (epochs, warm-up, decay) into this many minutes of training and "
            "validation, from the cost of the first epoch on this machine; re-fitted (never cut) if "
            "epochs get slower. The derived epochs and warm-up are logged."
        ),
    )
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="AdamW settings.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Learning-rate schedule.")
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Validate, checkpoint and ship an exponential moving average of the weights (per step).",
    )
    bucket_by_length: bool = Field(True, description="Batch sequences of similar length together.")
    patience: int = Field(
        10, ge=1, description="Early stopping: validations without a gain in smoothed val NDCG@10."
    )
    early_stop_window: int = Field(
        3,
        ge=1,
        description=(
            "Early stopping reads the median of the last this many validations, so one noisy "
            "validation can neither set the bar nor reset the count (1: the raw metric)."
        ),
    )
    early_stop_min_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Early stopping may fire only after this share of the schedule's epochs.",
    )
    on_plateau: Literal["decay", "stop"] = Field(
        "decay",
        description=(
            "When smoothed val NDCG@10 has not improved for `patience` validations: decay, the "
            "learning rate anneals to its floor over the next plateau_decay_fraction x the epochs done "
            "and the run ends there (any time after the warm-up); stop, the run stops at once (not "
            "before early_stop_min_fraction of the schedule)."
        ),
    )
    plateau_decay_fraction: float = Field(
        0.25,
        gt=0.0,
        le=4.0,
        description=(
            "on_plateau decay: the annealing's length as a share of the epochs done at the plateau "
            "(0.25: the last fifth of the run)."
        ),
    )
    val_every_n_epochs: int = Field(1, ge=1, description="Validate every this many epochs.")
    val_users: int | None = Field(
        2048,
        ge=1,
        description="Validate on a seeded sample of this many users (null, or more than there are: all).",
    )
    validation_holdout: Literal["all", "sampled"] = Field(
        "sampled",
        description=(
            "all: every validation event is held out of training; sampled: only the val_users sample's "
            "are, the others' are trained on, so the model also learns every other user's most recent "
            "event (with every user in the sample, the same as all)."
        ),
    )
    output_dir: Path = Field(Path("runs/demo"), description="Checkpoints and the model bundle go here.")
    init_from: Path | None = Field(
        None,
        description=(
            "Warm start from this model bundle: every weight copied, item rows matched by original id "
            "(new items start fresh, new users need nothing); the model section must match but for "
            "max_len. Pre-train then fine-tune: a second run with init_from and masking.last_item_prob "
            "1 (only the appended [MASK] predicted)."
        ),
    )
    max_time_minutes: float | None = Field(
        None,
        gt=0,
        description="Hard stop after this long, mid-schedule if need be (see time_budget_minutes).",
    )

    def resolved_batch_size(self) -> int:
        """``batch_size`` as a number; an unresolved ``auto`` (see ``recsys.training.auto``) is an error."""
        if self.batch_size == "auto":
            raise ValueError("train.batch_size is 'auto': resolve it against the dataset first")
        return self.batch_size

    @model_validator(mode="after")
    def _budget_inside_hard_stop(self) -> TrainConfig:
        budget, stop = self.time_budget_minutes, self.max_time_minutes
        if budget is not None and stop is not None and stop < budget:
            raise ValueError(
                f"max_time_minutes ({stop}) < time_budget_minutes ({budget}): the hard stop would cut "
                "the fitted schedule"
            )
        return self


Precision = Literal["auto", "32", "32-true", "bf16-mixed", "16-mixed"]


class RuntimeConfig(_Section):
    """Hardware and process settings, shared by training, evaluation and inference."""

    accelerator: str = Field("auto", description="Lightning accelerator (cpu, gpu, auto).")
    devices: int | str = Field(1, description="Lightning devices.")
    strategy: str = Field("auto", description="Lightning strategy (auto, ddp, ddp_spawn, ...).")
    num_nodes: int = Field(1, ge=1, description="Lightning nodes.")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; null leaves the default.")
    precision: Precision = Field(
        "auto",
        description=(
            "Training precision. auto: bf16-mixed where the device runs bf16 natively (a CUDA GPU with "
            "bf16; a CPU with AVX512_BF16 or AMX), else 32. Explicit bf16-mixed on a CPU without native "
            "bf16 warns: its matmuls are emulated, ~100x slower."
        ),
    )
    num_workers: int = Field(0, ge=0, description="Training DataLoader worker processes.")
    progress_bar: bool = Field(True, description="Show progress bars (training epochs, batch scoring).")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # `precision: 32` in YAML (or --set runtime.precision=32) arrives as an int.
        return str(value) if isinstance(value, int) else value


class EvalConfig(_Section):
    ks: list[int] = Field(
        [1, 5, 10, 20], min_length=1, description="Cut-offs for the ranking metrics (each >= 1)."
    )
    exclude_seen: bool = Field(True, description="Remove already-seen items from the ranking.")
    sampled_negatives: int | None = Field(
        None, ge=1, description="Sampled metrics with this many negatives (labelled sampled); null: none."
    )
    sampled_by: Literal["uniform", "popularity"] = Field("uniform", description="Sampled-metric negatives.")
    batch_size: int = Field(512, ge=1, description="Users scored per batch.")
    history_buckets: list[int] = Field(
        [5, 10, 20, 50, 100, 200], description="Upper edges of history-length buckets for breakdowns."
    )
    popularity_buckets: int = Field(5, ge=1, description="Target-popularity quantile buckets.")

    @field_validator("ks")
    @classmethod
    def _positive_cutoffs(cls, ks: list[int]) -> list[int]:
        bad = [k for k in ks if k < 1]
        if bad:
            raise ValueError(f"every cut-off must be >= 1 (a top-k of k items), got {bad}")
        return ks


class InferenceConfig(_Section):
    k: int = Field(10, ge=1, description="Recommendations per user.")
    batch_size: int = Field(1024, ge=1, description="Users scored per batch.")
    exclude_seen: bool = Field(True, description="Never recommend an item already in the history.")
    rows_per_part: int = Field(1_000_000, ge=1, description="Output rows per parquet part.")


class TrackingConfig(_Section):
    enabled: bool = Field(True, description="Track runs in MLflow.")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; null uses $MLFLOW_TRACKING_URI or sqlite:///mlruns.db.",
    )
    experiment: str = Field("recsys", description="MLflow experiment name.")
    registered_model: str | None = Field(
        None, description="Register the trained model under this name; null skips the registry."
    )


class RecsysConfig(_Section):
    """The whole configuration; each pipeline reads the sections it needs."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    loss: LossConfig = Field(default_factory=AutoLoss)
    train: TrainConfig = Field(default_factory=TrainConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
