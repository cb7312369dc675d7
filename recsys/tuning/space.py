"""The search space of a tune file, as typed config: distributions, pruner and study settings.

Every space key is checked against ``RecsysConfig`` when the tune file loads (unknown key, untunable
section, a value the field rejects), before any trial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from recsys.config import RecsysConfig

__all__ = [
    "CategoricalParam",
    "FloatParam",
    "HyperbandPrunerConfig",
    "IntParam",
    "MedianPrunerConfig",
    "NoPrunerConfig",
    "StudyConfig",
    "TuneConfig",
    "flatten_space",
    "selected_section",
]

TUNABLE_SECTIONS = ("model", "masking", "loss", "train")
"""Config sections a space may search. Data settings cannot vary: every trial shares one prepared dataset."""


# ------------------------------------------------------------------------------------------ config
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatParam(_Strict):
    """``trial.suggest_float(key, low, high, log=..., step=...)``."""

    type: Literal["float"]
    low: float = Field(description="Smallest value.")
    high: float = Field(description="Largest value.")
    log: bool = Field(False, description="Sample on a log scale (low must be > 0).")
    step: float | None = Field(None, gt=0, description="Discretisation step; null: continuous.")

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (an Optuna rule)")
        return self


class IntParam(_Strict):
    """``trial.suggest_int(key, low, high, step=..., log=...)``."""

    type: Literal["int"]
    low: int = Field(description="Smallest value.")
    high: int = Field(description="Largest value.")
    step: int = Field(1, ge=1, description="Spacing between candidate values.")
    log: bool = Field(False, description="Sample on a log scale (low must be >= 1, step 1).")

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log: true needs low >= 1 and step 1 (an Optuna rule)")
        return self


class CategoricalParam(_Strict):
    """``trial.suggest_categorical(key, choices)``; choices are scalars (an Optuna rule)."""

    type: Literal["categorical"]
    choices: list[bool | int | float | str | None] = Field(min_length=1, description="Candidate values.")


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class MedianPrunerConfig(_Strict):
    """Prune a trial whose epoch value is below the median of earlier trials at the same epoch."""

    kind: Literal["median"] = "median"
    n_startup_trials: int = Field(4, ge=0, description="Trials that are never pruned (they set the bar).")
    n_warmup_steps: int = Field(
        2, ge=0, description="The first this many epochs of each trial are never pruned."
    )
    interval_steps: int = Field(1, ge=1, description="Check every this many epochs.")
    n_min_trials: int = Field(1, ge=1, description="Trials that must have reached an epoch to compare.")


class HyperbandPrunerConfig(_Strict):
    """Hyperband (successive halving in brackets) over epochs."""

    kind: Literal["hyperband"] = "hyperband"
    min_resource: int = Field(1, ge=1, description="Epochs every trial gets before it can be stopped.")
    max_resource: int | None = Field(None, ge=1, description="Epochs of a full trial; null: the budget.")
    reduction_factor: int = Field(3, ge=2, description="Keep 1/reduction_factor of trials per rung.")


class NoPrunerConfig(_Strict):
    """Never prune: every trial runs its full epoch budget (early stopping still applies)."""

    kind: Literal["none"] = "none"


PrunerConfig = Annotated[
    MedianPrunerConfig | HyperbandPrunerConfig | NoPrunerConfig, Field(discriminator="kind")
]

Scalar = bool | int | float | str | None


class StudyConfig(_Strict):
    """How the Optuna study runs and where it is stored."""

    name: str = Field(min_length=1, description="Study name in the storage (default: the tune file's stem).")
    storage: str = Field(
        "sqlite:///optuna.db",
        description="Optuna RDB storage URL; share one (SQLite file, PostgreSQL, MySQL) to run workers.",
    )
    direction: Literal["maximize"] = Field("maximize", description="Validation NDCG@10 is maximised.")
    seed: int = Field(42, description="TPE sampler seed (a fresh single-worker study is reproducible).")
    n_trials: int = Field(20, ge=1, description="Finished (complete or pruned) trials the study should hold.")
    timeout: float | None = Field(None, gt=0, description="Start no new trial after this many seconds.")
    n_startup_trials: int = Field(5, ge=0, description="Random trials before TPE starts modelling.")
    pruner: PrunerConfig = Field(default_factory=MedianPrunerConfig, description="Pruner settings.")
    max_epochs_per_trial: int | None = Field(
        10, ge=1, description="train.max_epochs of every trial; null keeps the base config's."
    )
    baseline_trial: bool = Field(
        True, description="Evaluate the base config's values first, so the best is never below it."
    )
    enqueue: list[dict[str, Scalar]] = Field(
        default_factory=list, description="Trials to evaluate first (dotted key -> value), in order."
    )
    keep_trial_checkpoints: bool = Field(
        False, description="Keep each trial's checkpoints (several MB per trial) instead of deleting them."
    )
    max_failures_in_a_row: int | None = Field(
        5, ge=1, description="Stop this worker after this many consecutive failed trials; null: never."
    )
    heartbeat_seconds: int | None = Field(
        60, ge=1, description="Trial heartbeat; a trial silent for 2x this (a killed worker) is failed."
    )

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_shorthand(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value


class TuneConfig(_Strict):
    """A tune file: base config + overrides, study settings, and the search space."""

    base: Path | None = Field(
        None, description="recsys config YAML; relative to the tune file, else the cwd; null: defaults."
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the base config (dotted or nested keys)."
    )
    study: StudyConfig
    space: dict[str, ParamSpec] = Field(
        min_length=1, description="Dotted config key -> distribution (float, int or categorical)."
    )

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        """Accept nested or dotted keys in ``space`` and ``overrides``, and ``key: [a, b]`` shorthand."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        if isinstance(out.get("space"), dict):
            out["space"] = flatten_space(out["space"])
        if isinstance(out.get("overrides"), dict):
            out["overrides"] = _flatten_values(out["overrides"])
        return out

    @model_validator(mode="after")
    def _space_names_real_settings(self) -> TuneConfig:
        problems = [msg for key, spec in self.space.items() for msg in _check_param(key, spec)]
        budget = self.study.max_epochs_per_trial
        if budget is not None and "train.max_epochs" in self.space:
            problems.append("space key 'train.max_epochs': set study.max_epochs_per_trial to null to tune it")
        for i, entry in enumerate(self.study.enqueue):
            unknown = sorted(set(entry) - set(self.space))
            if unknown:
                problems.append(f"study.enqueue[{i}]: {', '.join(unknown)} not in space")
        if problems:
            raise ValueError("\n  ".join(problems))
        return self


_SPEC_KEYS = frozenset({"type", "low", "high", "step", "log", "choices"})
"""A mapping with any of these keys is a distribution (possibly partial, from ``--set``), not a section."""


def flatten_space(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested/dotted space → ``{dotted key: distribution}``; ``key: [a, b]`` means categorical."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, list):
            value = {"type": "categorical", "choices": value}
        if isinstance(value, dict) and not _SPEC_KEYS & set(value):
            entries = flatten_space(value, f"{dotted}.")
        else:
            entries = {dotted: value}
        for sub, spec in entries.items():
            # Two spellings of one key (dotted in the file, nested from `--set`) merge, the later winning.
            both = isinstance(spec, dict) and isinstance(out.get(sub), dict)
            out[sub] = {**out[sub], **spec} if both else spec
    return out


def _flatten_values(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten_values(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


# ------------------------------------------------------------------------------ the space vs RecsysConfig
def _section_models(annotation: Any) -> list[type[BaseModel]]:
    """Config classes inside a field's type (one for a section, several for the loss union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _section_models(arg)]


def _leaf_fields(key: str) -> list[FieldInfo]:
    """The field(s) a dotted key names (one per loss kind that has it); ValueError naming the key."""
    parts = key.split(".")
    models: list[type[BaseModel]] = [RecsysConfig]
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the top level"
        owners = [m for m in models if part in m.model_fields]
        if not owners:
            known = sorted({name for m in models for name in m.model_fields})
            raise ValueError(f"space key {key!r}: {part!r} is not a setting of {where} ({', '.join(known)})")
        infos = [m.model_fields[part] for m in owners]
        subsections = [sub for info in infos for sub in _section_models(info.annotation)]
        if i == len(parts) - 1:
            if subsections:
                raise ValueError(f"space key {key!r} is a section; search its settings ({key}.<name>)")
            return infos
        if not subsections:
            raise ValueError(f"space key {key!r}: {'.'.join(parts[: i + 1])} is a value, not a section")
        models = subsections
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _check_param(key: str, spec: FloatParam | IntParam | CategoricalParam) -> list[str]:
    """Problems with one space entry: unknown key, untunable section, or values the field rejects."""
    section = key.split(".", 1)[0]
    if section not in TUNABLE_SECTIONS:
        return [
            f"space key {key!r}: only {', '.join(TUNABLE_SECTIONS)} settings can be tuned "
            "(every trial shares one prepared dataset and one tracking store)"
        ]
    if key == "train.output_dir":
        return ["space key 'train.output_dir': trials get their own output folders"]
    try:
        infos = _leaf_fields(key)
    except ValueError as exc:
        return [str(exc)]
    probes: list[Any] = list(spec.choices) if isinstance(spec, CategoricalParam) else [spec.low, spec.high]
    problems = []
    for value in probes:
        errors = [_rejects(info, value) for info in infos]
        if all(errors):
            problems.append(f"space key {key!r}: value {value!r} is not valid ({errors[0]})")
    if isinstance(spec, FloatParam) and spec.step is None and spec.low < spec.high and not problems:
        # A continuous range yields fractional values: an int field must say so before any trial.
        middle = spec.low + (spec.high - spec.low) / math.pi
        if all(_rejects(info, middle) for info in infos):
            problems.append(f"space key {key!r}: takes whole numbers; use type: int")
    return problems


def _rejects(info: FieldInfo, value: Any) -> str | None:
    """Why the field rejects ``value`` (its type and bounds), or None when it accepts it."""
    from pydantic import TypeAdapter

    try:
        annotated: Any = Annotated[info.annotation, info]  # the field's type with its bounds (ge, lt...)
        TypeAdapter(annotated).validate_python(value)
    except ValidationError as exc:
        return str(exc.errors()[0]["msg"])
    return None


def selected_section(raw: Mapping[str, Any], parts: list[str]) -> type[BaseModel] | None:
    """The config class at ``parts`` given the raw config (for the loss, the one its ``kind`` picks)."""
    model: type[BaseModel] = RecsysConfig
    node: Any = raw
    for part in parts:
        info = model.model_fields.get(part)
        members = _section_models(info.annotation) if info is not None else []
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
        if len(members) == 1:
            model = members[0]
            continue
        kind = node.get("kind") if isinstance(node, Mapping) else None
        chosen = [m for m in members if "kind" in m.model_fields and m.model_fields["kind"].default == kind]
        if not chosen:
            return None
        model = chosen[0]
    return model
