"""Typed configuration, grouped by concern.

Every section is a pydantic model with ``extra="forbid"`` so that a misspelt key fails on load with its
dotted path, and every field carries a one-line description that doubles as documentation
(the README's config reference is generated from them; ``recsys config show`` prints a resolved
config). YAML files under ``configs/`` mirror these classes one to one.
"""

from recsys.config.loading import apply_overrides, flatten, load_config, to_yaml
from recsys.config.sections import (
    CleaningConfig,
    ColumnsConfig,
    ConfigError,
    DataConfig,
    EvalConfig,
    FullSoftmaxLoss,
    GBCELoss,
    InferenceConfig,
    LossConfig,
    MaskingConfig,
    ModelConfig,
    OptimizerConfig,
    Precision,
    RecsysConfig,
    RuntimeConfig,
    SampledSoftmaxLoss,
    ScheduleConfig,
    SourceConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
)

__all__ = [
    "CleaningConfig",
    "ColumnsConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FullSoftmaxLoss",
    "GBCELoss",
    "InferenceConfig",
    "LossConfig",
    "MaskingConfig",
    "ModelConfig",
    "OptimizerConfig",
    "Precision",
    "RecsysConfig",
    "RuntimeConfig",
    "SampledSoftmaxLoss",
    "ScheduleConfig",
    "SourceConfig",
    "SplitConfig",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "flatten",
    "load_config",
    "to_yaml",
]
