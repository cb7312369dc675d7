"""The ``tune`` job: an Optuna study over a YAML search space, every trial trained by ``fit``.

A tune file names a base recsys config, overrides for it, the study settings and the search space::

    base: ../demo.yaml                 # relative to this file, else to the working directory
    overrides: {train.output_dir: runs/tune/demo}
    study: {name: demo, storage: "sqlite:///optuna.db", seed: 42, n_trials: 20,
            max_epochs_per_trial: 10, pruner: {kind: median, n_startup_trials: 4, n_warmup_steps: 2}}
    space:
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.n_layers: {type: int, low: 1, high: 3}
      loss.kind: {type: categorical, choices: [softmax, gbce]}

One search-space function (:func:`suggest_config`: trial → validated ``RecsysConfig``) and one training
function (``recsys.training.fit.fit``, the one ``recsys train`` runs). Each trial trains in
``<train.output_dir>/trials/<number>`` without writing a bundle; validation NDCG@10 is reported every
epoch and weak trials are pruned (:class:`PruningCallback`). The study lives in an RDB storage (SQLite by
default): rerunning an interrupted study resumes it, and several processes pointed at one storage work on
the same study. MLflow gets one parent run per study and a nested run per trial. At the end the best
trial's config is written as ``<train.output_dir>/best.yaml``, ready for ``recsys train``, beside plots of
the study.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import optuna
import pytorch_lightning as pl
import yaml
from optuna.trial import BaseTrial, FixedTrial, FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from sqlalchemy.exc import IntegrityError, OperationalError

from pipelines.tracking import (
    Tracker,
    check_reachable,
    log_learning_curve,
    resolve_tracking_uri,
    tracked_run,
)
from pipelines.train import dataset_name
from recsys.config import ConfigError, DataConfig, RecsysConfig, apply_overrides, load_config, to_yaml
from recsys.data.pipeline import PrepareOutcome, prepare
from recsys.data.prepared import PreparedDataset
from recsys.training.fit import MONITOR, dataset_fingerprint, fit

__all__ = [
    "CategoricalParam",
    "FloatParam",
    "HyperbandPrunerConfig",
    "IntParam",
    "InvalidTrialConfigError",
    "MedianPrunerConfig",
    "NoPrunerConfig",
    "PruningCallback",
    "StudyConfig",
    "TuneConfig",
    "TuneResult",
    "load_tune_config",
    "run",
    "suggest_config",
]

_log = logging.getLogger(__name__)

TUNABLE_SECTIONS = ("model", "masking", "loss", "train")
"""Config sections a space may search. Data settings cannot vary: every trial shares one prepared dataset."""

_TUNE_KEYS = ("base", "overrides", "study", "space")
"""Top-level keys of a tune file; a ``--set`` key starting with anything else overrides the base config."""

_SETUP_ATTR = "recsys.setup"
"""Study user attribute the creating process writes once the study is ready (with the parent run id)."""

_JOIN_WAIT_S = 60.0
"""How long a worker joining a fresh study waits for its creator to open the MLflow parent run."""

_STORAGE_ATTEMPTS = 4
"""Tries to open the Optuna storage (a fresh database is created by the first worker to get there)."""

_PLOTS = ("optimization_history", "intermediate_values", "parallel_coordinate", "param_importances")


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
    n_warmup_steps: int = Field(2, ge=0, description="Epochs (0-based) of each trial that are never pruned.")
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
            out["space"] = _flatten_space(out["space"])
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


def _flatten_space(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested/dotted space → ``{dotted key: distribution}``; ``key: [a, b]`` means categorical."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, list):
            value = {"type": "categorical", "choices": value}
        if isinstance(value, dict) and not _SPEC_KEYS & set(value):
            entries = _flatten_space(value, f"{dotted}.")
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


def _selected_section(raw: Mapping[str, Any], parts: list[str]) -> type[BaseModel] | None:
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


# ------------------------------------------------------------------------------------------ loading
def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid tune configuration ({origin}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "\n".join(lines)


def _set_arg(key: str, value: Any) -> str:
    """``key=value`` for ``apply_overrides``, the value as YAML so floats, nulls and strings round-trip.

    (``json.dumps(1e-05)`` would give ``1e-05``, which YAML 1.1 reads as a string.)
    """
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def _resolve_base(base: Path, tune_file: Path) -> Path:
    for candidate in (tune_file.parent / base, base):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{tune_file}: base config {str(base)!r} not found (looked in {tune_file.parent} and the cwd)"
    )


def load_tune_config(path: str | Path, overrides: list[str] | None = None) -> tuple[TuneConfig, RecsysConfig]:
    """Read a tune file, apply ``--set`` overrides, validate it and its base config.

    ``--set`` keys under ``base``, ``overrides``, ``study`` or ``space`` change the tune file; any other
    key (``train.lr=...``) overrides the base config, after the file's own ``overrides``. Every space key
    is checked against ``RecsysConfig`` here, before any trial. Errors raise ``ConfigError`` naming the key.
    """
    tune_file = Path(path)
    if not tune_file.is_file():
        raise ConfigError(f"tune config not found: {tune_file}")
    try:
        raw = yaml.safe_load(tune_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{tune_file}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{tune_file}: expected a mapping at the top level")
    tune_sets = [s for s in overrides or [] if s.split("=", 1)[0].split(".")[0].strip() in _TUNE_KEYS]
    base_sets = [s for s in overrides or [] if s not in tune_sets]
    if isinstance(raw.get("space"), dict):
        # Nested form first, so that `--set space.train.lr.high=...` lands in the dotted entry.
        raw["space"] = _flatten_space(raw["space"])
    if tune_sets:
        raw = apply_overrides(raw, tune_sets)
    study = raw.setdefault("study", {})
    if isinstance(study, dict):
        study.setdefault("name", tune_file.stem)
    origin = str(tune_file) + (" + --set overrides" if tune_sets else "")
    try:
        tune = TuneConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None
    base_path = _resolve_base(tune.base, tune_file) if tune.base is not None else None
    sets = [_set_arg(k, v) for k, v in tune.overrides.items()] + base_sets
    return tune, load_config(base_path, sets)


# ------------------------------------------------------------------------------------------ one trial
class InvalidTrialConfigError(ConfigError):
    """The sampled combination does not validate (e.g. hidden_size not divisible by n_heads)."""


def _suggest(trial: BaseTrial, key: str, spec: FloatParam | IntParam | CategoricalParam) -> Any:
    if isinstance(spec, FloatParam):
        return trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, IntParam):
        return trial.suggest_int(key, spec.low, spec.high, step=spec.step, log=spec.log)
    return trial.suggest_categorical(key, spec.choices)


def _trial_dir(base: RecsysConfig, number: int) -> Path:
    """``<train.output_dir>/trials/<number>``: where a trial trains."""
    return Path(base.train.output_dir) / "trials" / str(number)


def suggest_config(trial: BaseTrial, tune: TuneConfig, base: RecsysConfig) -> RecsysConfig:
    """The one search-space function: sample every space key with ``trial.suggest_*``, return the config.

    Keys are applied to the base config with ``apply_overrides`` and the result is validated as a whole.
    ``*.kind`` keys are sampled first and the rest is conditional on them: ``loss.n_negatives`` is only
    sampled when the chosen loss has that setting, and settings the base loss had but the chosen one
    lacks are dropped. The trial trains in ``<train.output_dir>/trials/<number>`` for
    ``study.max_epochs_per_trial`` epochs.

    Raises:
        InvalidTrialConfigError: the combination does not validate; the message lists the sampled values.
    """
    raw = base.model_dump(mode="json")
    ordered = sorted(tune.space.items(), key=lambda kv: not kv[0].endswith(".kind"))  # stable: kinds first
    chosen: dict[str, Any] = {}
    for key, spec in ordered:
        *section, leaf = key.split(".")
        model = _selected_section(raw, section)
        if model is None or leaf not in model.model_fields:
            continue  # conditional: the chosen loss kind has no such setting
        chosen[key] = _suggest(trial, key, spec)
        raw = apply_overrides(raw, [_set_arg(key, chosen[key])])
        if leaf == "kind":
            _drop_foreign_settings(raw, section, explicit=set(chosen))
    trial_sets = {"train.output_dir": str(_trial_dir(base, trial.number))}
    if tune.study.max_epochs_per_trial is not None:
        trial_sets["train.max_epochs"] = str(tune.study.max_epochs_per_trial)
    raw = apply_overrides(raw, [f"{k}={v}" for k, v in trial_sets.items()])
    try:
        return RecsysConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        values = ", ".join(f"{k}={v!r}" for k, v in chosen.items())
        raise InvalidTrialConfigError(f"invalid combination ({values}): {problems}") from None


def _drop_foreign_settings(raw: dict[str, Any], section: list[str], *, explicit: set[str]) -> None:
    """After a ``kind`` switch, remove inherited settings the new kind does not have (extra='forbid')."""
    model = _selected_section(raw, section)
    node: Any = raw
    for part in section:
        node = node.get(part) if isinstance(node, dict) else None
    if model is None or not isinstance(node, dict):
        return
    prefix = ".".join(section)
    for name in list(node):
        if name not in model.model_fields and f"{prefix}.{name}" not in explicit:
            del node[name]


class PruningCallback(pl.Callback):
    """Report validation NDCG@10 to the trial after every validation; stop training when it is pruned.

    Why not ``optuna_integration.PyTorchLightningPruningCallback``: in optuna-integration 5.0 it is built
    on the ``lightning`` package (``lightning.pytorch.callbacks.Callback``), not on ``pytorch_lightning``
    which recsys uses; without ``lightning`` installed its constructor raises ImportError ("Tried to
    import 'lightning' but failed"), and installing a second copy of Lightning under another namespace
    for one hook is not worth it. This is the same report/should_prune logic for ``pytorch_lightning``.

    Why stop instead of raising ``TrialPruned`` inside the hook (as the integration does): raising from
    ``on_validation_end`` aborts ``fit()`` before the epoch is recorded and before ``fit`` returns its
    history, so the pruned trial's learning curve would lose its last point. ``trainer.should_stop`` ends
    training at the same place; the objective raises ``TrialPruned`` once ``fit`` has returned.

    A non-finite validation value or training loss (diverged training) also stops the trial, without
    reporting the value; it is then pruned too, with ``reason`` saying why.
    """

    def __init__(self, trial: BaseTrial, monitor: str = MONITOR) -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.reason: str | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metric = trainer.callback_metrics.get(self.monitor)
        if metric is None:
            return
        value = float(metric)
        epoch = int(trainer.current_epoch)
        loss = getattr(pl_module, "epoch_loss", None)
        if not math.isfinite(value) or (loss is not None and not math.isfinite(loss)):
            self.reason = (
                f"non-finite {'training loss' if math.isfinite(value) else self.monitor} at epoch {epoch}"
            )
            trainer.should_stop = True
            return
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            self.reason = f"pruned at epoch {epoch} ({self.monitor} = {value:.4f})"
            trainer.should_stop = True


@dataclass
class _Context:
    """What every trial of this worker shares."""

    tune: TuneConfig
    base: RecsysConfig
    dataset: PreparedDataset
    dataset_label: str
    parent: Tracker
    trials_run: int = 0
    failures_in_a_row: int = 0
    stopped_reason: str | None = None


def _objective(trial: optuna.Trial, ctx: _Context) -> float:
    """Build the trial's config, train it with ``fit`` inside a nested MLflow run, return best NDCG@10."""
    try:
        cfg = suggest_config(trial, ctx.tune, ctx.base)
    except InvalidTrialConfigError as exc:
        # Pruned rather than failed: TPE ignores failed trials but ranks pruned ones as bad, so it learns
        # to avoid the invalid region instead of sampling it again.
        trial.set_user_attr("prune_reason", str(exc))
        raise optuna.TrialPruned(str(exc)) from None
    folder = Path(cfg.train.output_dir)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # a leftover from another study's trial
    record: dict[str, Any] = {"number": trial.number, "params": trial.params, "state": "failed"}
    try:
        with tracked_run(
            cfg,
            "tune",
            dataset=ctx.dataset_label,
            run_name=f"{ctx.tune.study.name}-trial-{trial.number}",
            parent_run_id=ctx.parent.run_id,
        ) as tracker:
            tracker.set_tags(
                {"optuna.study": ctx.tune.study.name, "optuna.trial": trial.number, "state": "running"}
            )
            tracker.log_params({f"suggested.{k}": v for k, v in trial.params.items()})
            pruning = PruningCallback(trial)
            logger = tracker.lightning_logger()
            try:
                fitted = fit(
                    cfg,
                    ctx.dataset,
                    loggers=[logger] if logger else [],
                    callbacks=[pruning],
                    write_bundle=False,
                )
            except Exception:
                tracker.set_tags({"state": "failed"})
                raise
            record["history"] = fitted.history
            log_learning_curve(tracker, fitted.history)
            value = fitted.best_val.get(MONITOR)
            reason = pruning.reason
            if reason is None and (value is None or not math.isfinite(value)):
                reason = f"no finite {MONITOR} (epochs: {fitted.epochs})"
            record.update(value=value, best_epoch=fitted.best_epoch, epochs=fitted.epochs)
            if reason is not None:
                record.update(state="pruned", reason=reason)
                tracker.set_tags({"state": "pruned", "prune_reason": reason})
            else:
                record["state"] = "complete"
                tracker.set_tags({"state": "complete"})
                tracker.log_metrics({f"best_{MONITOR}": float(value or 0.0), "best_epoch": fitted.best_epoch})
    except SystemExit as exc:
        # Lightning turns Ctrl-C (and SIGTERM) during fit() into SystemExit after its graceful shutdown.
        # Optuna records only KeyboardInterrupt (as FAIL): a SystemExit would leave the trial RUNNING.
        raise KeyboardInterrupt(f"trial {trial.number} interrupted") from exc
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        trial.set_user_attr("error", record["error"][:1000])
        raise
    finally:
        _close_trial_dir(folder, record, keep_checkpoints=ctx.tune.study.keep_trial_checkpoints)
    if record["state"] == "pruned":
        trial.set_user_attr("prune_reason", record["reason"])
        raise optuna.TrialPruned(record["reason"])
    return float(record["value"])


def _close_trial_dir(folder: Path, record: dict[str, Any], *, keep_checkpoints: bool) -> None:
    """Leave ``trial.json`` (params, state, value, learning curve); drop checkpoints unless kept."""
    if not keep_checkpoints:
        # Nothing reads them after the trial (best.yaml retrains), and 20 trials of a real catalogue
        # would leave hundreds of MB behind.
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trial.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")


# ------------------------------------------------------------------------------------------ the study
def _mask_url(url: str) -> str:
    """The storage URL without its password (it goes into logs, tags and JSON)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _open_storage(cfg: StudyConfig) -> optuna.storages.RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if cfg.storage.startswith("sqlite:///"):
        db = cfg.storage.removeprefix("sqlite:///").split("?")[0]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        # Python's sqlite3 gives up on a locked database after 5 s; parallel workers hold write locks
        # briefly but often, and a longer wait is better than a failed trial.
        engine_kwargs["connect_args"] = {"timeout": 60}
    beat = cfg.heartbeat_seconds
    for attempt in range(_STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    cfg.storage,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=beat,
                    grace_period=2 * beat if beat else None,
                )
        except (OperationalError, IntegrityError) as exc:
            if attempt + 1 == _STORAGE_ATTEMPTS:
                raise _storage_error(cfg.storage, exc) from None
            # Workers started together on a fresh database race to create Optuna's tables ("table ...
            # already exists"); by the next attempt the other one has, and the schema check passes.
            time.sleep(1.0 + attempt)
        except Exception as exc:
            raise _storage_error(cfg.storage, exc) from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _storage_error(url: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"study.storage {_mask_url(url)}: cannot open the Optuna storage ({type(exc).__name__}: {exc})"
    )


def _pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    p = cfg.pruner
    if isinstance(p, MedianPrunerConfig):
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials,
            n_warmup_steps=p.n_warmup_steps,
            interval_steps=p.interval_steps,
            n_min_trials=p.n_min_trials,
        )
    if isinstance(p, HyperbandPrunerConfig):
        max_resource = p.max_resource or cfg.max_epochs_per_trial
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource,
            max_resource=max_resource if max_resource is not None else "auto",
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def _sampler(cfg: StudyConfig, seed: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # multivariate: hidden size, heads and lr interact; constant_liar: parallel workers do not all
        # sample the same promising point while its first trial is still running.
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=cfg.n_startup_trials, multivariate=True, constant_liar=True
        )


def _create_or_join(storage: optuna.storages.BaseStorage, cfg: StudyConfig) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when it exists (a resumed study, or another worker's).

    Creation is the atomic step (unique study name in the RDB), so exactly one process is the creator;
    it enqueues the first trials and opens the MLflow parent run.
    """
    try:
        study = optuna.create_study(
            storage=storage, study_name=cfg.name, direction=cfg.direction, pruner=_pruner(cfg)
        )
        study.sampler = _sampler(cfg, cfg.seed)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=cfg.name, storage=storage, pruner=_pruner(cfg))
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {cfg.name!r} in {_mask_url(cfg.storage)} does not maximise; rename it")
    # A joining or resuming worker with the creator's seed would replay the creator's random start-up
    # points; mix in the study's progress and the process id so each worker explores different ones.
    seed = np.random.SeedSequence([cfg.seed, len(study.trials), os.getpid()]).generate_state(1)[0]
    study.sampler = _sampler(cfg, int(seed))
    return study, False


def _in_range(spec: FloatParam | IntParam | CategoricalParam, value: Any) -> bool:
    if isinstance(spec, CategoricalParam):
        return value in spec.choices
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    if isinstance(spec, IntParam):
        return (
            isinstance(value, int) and spec.low <= value <= spec.high and (value - spec.low) % spec.step == 0
        )
    return spec.low <= value <= spec.high


def _enqueue_first_trials(study: optuna.Study, tune: TuneConfig, base: RecsysConfig) -> None:
    """The baseline (the base config's own values for the space's keys), then ``study.enqueue``.

    A base value outside the space is left to the sampler and the trial is marked ``baseline_exact:
    false``; a key that does not apply to the base (``loss.n_negatives`` of a softmax base) is skipped.
    """
    if tune.study.baseline_trial:
        raw = base.model_dump(mode="json")
        params: dict[str, Any] = {}
        exact = True
        for key, spec in tune.space.items():
            *section, leaf = key.split(".")
            model = _selected_section(raw, section)
            if model is None or leaf not in model.model_fields:
                continue
            value: Any = raw
            for part in key.split("."):
                value = value[part]
            if _in_range(spec, value):
                params[key] = value
            else:
                exact = False
        study.enqueue_trial(params, user_attrs={"baseline": True, "baseline_exact": exact})
    for entry in tune.study.enqueue:
        study.enqueue_trial(dict(entry))


# ------------------------------------------------------------------------------------------ MLflow parent
@contextmanager
def _parent_run(
    base: RecsysConfig,
    tune: TuneConfig,
    study: optuna.Study,
    dataset: PreparedDataset,
    *,
    created: bool,
) -> Iterator[Tracker]:
    """The study's one MLflow parent run: opened by the creator, re-attached by resumes and workers."""
    if not base.tracking.enabled:
        if created:
            study.set_user_attr(_SETUP_ATTR, {"parent_run_id": None})
        yield Tracker.disabled()
        return
    uri = resolve_tracking_uri(base.tracking)
    label = dataset_name(base)
    if not created:
        setup = _wait_for_setup(study)
        parent_id = setup.get("parent_run_id")
        if parent_id and setup.get("tracking_uri") == uri:
            with _attached_run(base, parent_id, label) as tracker:
                if tracker is not None:
                    yield tracker
                    return
        _log.warning(
            "study %s has no usable MLflow parent run in %s; opening a new one", study.study_name, uri
        )
    with tracked_run(base, "tune", dataset=label, run_name=f"tune-{study.study_name}") as tracker:
        study.set_user_attr(_SETUP_ATTR, {"parent_run_id": tracker.run_id, "tracking_uri": uri})
        tracker.log_input_fingerprint(dataset_fingerprint(dataset), source=base.data.source.path)
        tracker.log_text(yaml.safe_dump(tune.model_dump(mode="json"), sort_keys=False), "tune.yaml")
        yield tracker


def _wait_for_setup(study: optuna.Study) -> dict[str, Any]:
    """The creator's setup record; a worker started with it may have to wait a few seconds for it."""
    deadline = time.monotonic() + _JOIN_WAIT_S
    while True:
        setup = study.user_attrs.get(_SETUP_ATTR)
        if isinstance(setup, dict):
            return setup
        if time.monotonic() > deadline:
            return {}
        time.sleep(0.5)


@contextmanager
def _attached_run(base: RecsysConfig, run_id: str, label: str) -> Iterator[Tracker | None]:
    """A ``Tracker`` on an existing run (set RUNNING while this worker works), or None if it is gone.

    ``tracked_run`` only opens new runs; a resumed study or a second worker must log into the run the
    creator opened, so this reopens it by id with the client.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(base.tracking)
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        run = None
    if run is None or run.info.lifecycle_stage == "deleted":
        yield None
        return
    client.update_run(run_id, status="RUNNING")
    tracker = Tracker(
        client,
        run_id,
        experiment_id=run.info.experiment_id,
        experiment_name=base.tracking.experiment,
        tracking_uri=uri,
        dataset=label,
    )
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            client.set_terminated(run_id, status)
        except MlflowException as exc:
            _log.warning("could not end MLflow run %s: %s", run_id, exc)


# ------------------------------------------------------------------------------------------ results
@dataclass
class TuneResult:
    """The outcome of ``recsys tune``: study counts (whole study), best trial and where things are."""

    study_name: str
    storage: str
    output_dir: Path
    trials_run: int
    n_complete: int
    n_pruned: int
    n_failed: int
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, Any]
    best_config_path: Path | None
    baseline_value: float | None
    parent_run_id: str | None
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    stopped_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "study": self.study_name,
            "storage": self.storage,
            "output_dir": str(self.output_dir),
            "trials_run": self.trials_run,
            "complete": self.n_complete,
            "pruned": self.n_pruned,
            "failed": self.n_failed,
            "best_trial": self.best_trial,
            "best_value": self.best_value,
            "best_params": self.best_params,
            "best_config": str(self.best_config_path) if self.best_config_path else None,
            "baseline_value": self.baseline_value,
            "parent_run_id": self.parent_run_id,
            "plots": [str(p) for p in self.plots],
            "seconds": round(self.seconds, 2),
            "stopped_reason": self.stopped_reason,
        }

    def summary(self) -> str:
        total = self.n_complete + self.n_pruned + self.n_failed
        lines = [
            f"study {self.study_name!r} ({self.storage}): {total} finished trial(s): "
            f"{self.n_complete} complete, {self.n_pruned} pruned, {self.n_failed} failed; "
            f"{self.trials_run} run now in {self.seconds:.1f} s",
        ]
        if self.stopped_reason:
            lines.append(f"stopped early: {self.stopped_reason}")
        if self.best_trial is None or self.best_value is None:
            lines.append("no complete trial yet: no best config")
        else:
            base = (
                ""
                if self.baseline_value is None
                else f" (base config, same budget: {self.baseline_value:.4f})"
            )
            lines.append(f"best trial {self.best_trial}: validation NDCG@10 = {self.best_value:.4f}{base}")
            lines.extend(f"  {k} = {v!r}" for k, v in self.best_params.items())
            lines.append(
                f"best config: {self.best_config_path}  (recsys train --config {self.best_config_path})"
            )
        if self.plots:
            lines.append(f"plots: {self.plots[0].parent}")
        if self.parent_run_id:
            lines.append(f"MLflow parent run: {self.parent_run_id}")
        return "\n".join(lines)


def _write_best_config(study: optuna.Study, best: FrozenTrial, tune: TuneConfig, base: RecsysConfig) -> Path:
    """The best trial's config as YAML for ``recsys train``, written atomically (workers race here)."""
    cfg = suggest_config(FixedTrial(best.params, number=best.number), tune, base)
    out = Path(base.train.output_dir)
    raw = cfg.model_dump(mode="json")
    raw["train"]["output_dir"] = str(out)  # train the winner beside best.yaml, not in its trial folder
    cfg = RecsysConfig.model_validate(raw)
    header = (
        f"# Best trial {best.number} of study {study.study_name!r}: {MONITOR} = {best.value:.4f}\n"
        f"# trained for train.max_epochs = {cfg.train.max_epochs} epochs (the per-trial budget).\n"
        f"# recsys train --config {out / 'best.yaml'}\n"
    )
    path = out / "best.yaml"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".best.yaml.{os.getpid()}"
    tmp.write_text(header + to_yaml(cfg), encoding="utf-8")
    tmp.replace(path)
    return path


def _save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimisation history, intermediate values, parallel coordinates, importances (>= 2 complete)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    makers = {
        "optimization_history": ovm.plot_optimization_history,
        "intermediate_values": ovm.plot_intermediate_values,
        "parallel_coordinate": ovm.plot_parallel_coordinate,
        "param_importances": ovm.plot_param_importances,
    }
    folder.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    for name in _PLOTS:
        if name == "param_importances" and len(complete) < 2:
            continue  # importances need at least two complete trials
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = makers[name](study)
            figure = (axes.flat[0] if isinstance(axes, np.ndarray) else axes).get_figure(root=True)
            assert figure is not None
            path = folder / f"{name}.png"
            # Through a temporary file: two workers finishing together write the same paths.
            tmp = folder / f".{name}.{os.getpid()}.png"
            figure.savefig(tmp, dpi=100, bbox_inches="tight")
            plt.close(figure)
            tmp.replace(path)
            saved.append(path)
        except Exception as exc:  # a plot must never fail the study (e.g. importances of identical trials)
            _log.warning("could not draw %s: %s", name, exc)
    return saved


def _trial_json(t: FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "value": t.value,
        "params": t.params,
        "epochs_reported": len(t.intermediate_values),
        "seconds": t.duration.total_seconds() if t.duration else None,
        **{k: v for k, v in t.user_attrs.items() if k in ("baseline", "prune_reason", "error")},
    }


def _finish(study: optuna.Study, ctx: _Context, seconds: float) -> TuneResult:
    trials = study.get_trials(deepcopy=False)
    by_state = {
        s: sum(t.state == s for t in trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    out = Path(ctx.base.train.output_dir)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: float(t.value or -math.inf)) if complete else None
    baseline = next((t for t in complete if t.user_attrs.get("baseline")), None)
    best_path = _write_best_config(study, best, ctx.tune, ctx.base) if best is not None else None
    plots = _save_plots(study, out / "plots")
    summary = {"study": study.study_name, "trials": [_trial_json(t) for t in trials]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    parent = ctx.parent
    parent.log_metrics(
        {
            "trials_complete": by_state[TrialState.COMPLETE],
            "trials_pruned": by_state[TrialState.PRUNED],
            "trials_failed": by_state[TrialState.FAIL],
            **({f"best_{MONITOR}": float(best.value or 0.0)} if best is not None else {}),
        }
    )
    if best is not None and best_path is not None:
        parent.set_tags({"best_trial": best.number})
        parent.log_artifact(best_path)
    for plot in plots:
        parent.log_artifact(plot, "plots")
    parent.log_dict(summary, "study.json")
    return TuneResult(
        study_name=study.study_name,
        storage=_mask_url(ctx.tune.study.storage),
        output_dir=out,
        trials_run=ctx.trials_run,
        n_complete=by_state[TrialState.COMPLETE],
        n_pruned=by_state[TrialState.PRUNED],
        n_failed=by_state[TrialState.FAIL],
        best_trial=best.number if best is not None else None,
        best_value=float(best.value) if best is not None and best.value is not None else None,
        best_params=dict(best.params) if best is not None else {},
        best_config_path=best_path,
        baseline_value=float(baseline.value) if baseline is not None and baseline.value is not None else None,
        parent_run_id=parent.run_id,
        plots=plots,
        seconds=seconds,
        stopped_reason=ctx.stopped_reason,
    )


def _after_trial(ctx: _Context) -> Any:
    """Optuna callback: count, stop after too many failures in a row, log the value on the parent run."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        ctx.trials_run += 1
        ctx.failures_in_a_row = ctx.failures_in_a_row + 1 if trial.state == TrialState.FAIL else 0
        limit = ctx.tune.study.max_failures_in_a_row
        if limit is not None and ctx.failures_in_a_row >= limit:
            ctx.stopped_reason = f"{limit} trials failed in a row (see the trials' error attributes)"
            _log.error("stopping study %s: %s", study.study_name, ctx.stopped_reason)
            study.stop()
        if trial.state == TrialState.COMPLETE and trial.value is not None:
            try:
                ctx.parent.log_metrics({f"trial_{MONITOR}": trial.value}, step=trial.number)
            except Exception as exc:  # the parent's chart is a nicety; the study goes on
                _log.warning("could not log trial %d on the parent run: %s", trial.number, exc)

    return callback


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _prepare_shared(cfg: DataConfig) -> PrepareOutcome:
    """Prepare (or reuse) the dataset once, even when several workers start at the same moment.

    Without the lock two fresh workers would both build it and swap directories under each other.
    """
    target = Path(cfg.output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock, prepare is still atomic
        return prepare(cfg)
    with (target.parent / f".{target.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            return prepare(cfg)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(
    config_path: str | Path,
    *,
    overrides: list[str] | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
) -> TuneResult:
    """Run (or resume, or join) the study of a tune file until it holds ``n_trials`` finished trials.

    Complete and pruned trials already in the storage count; failed ones (crashes, interruptions) do
    not, so a rerun replaces them. With several workers on one storage each stops once the study is
    full (a worker's trial in flight at that moment may overshoot by one). Crashing trials are recorded as
    failed and the study goes on; NaN metrics and invalid combinations are pruned.

    Args:
        config_path: the tune YAML file.
        overrides: ``--set`` strings: ``study.*``/``space.*``/... change the tune file, other keys the base.
        n_trials: overrides ``study.n_trials``.
        timeout: overrides ``study.timeout`` (seconds; no trial starts after it, a running one finishes).
    """
    started = time.perf_counter()
    sets = list(overrides or [])
    if n_trials is not None:
        sets.append(f"study.n_trials={n_trials}")
    if timeout is not None:
        sets.append(f"study.timeout={timeout}")
    tune, base = load_tune_config(config_path, sets)
    if base.tracking.enabled:
        check_reachable(resolve_tracking_uri(base.tracking))  # before the study exists, not after
    outcome = _prepare_shared(base.data)
    dataset = PreparedDataset.load(outcome.path)
    label = dataset_name(base)
    study, created = _create_or_join(_open_storage(tune.study), tune.study)
    if created:
        _enqueue_first_trials(study, tune, base)
    with _parent_run(base, tune, study, dataset, created=created) as parent:
        parent.set_tags(
            {
                "optuna.study": study.study_name,
                "optuna.storage": _mask_url(tune.study.storage),
                "optuna.n_trials": tune.study.n_trials,
            }
        )
        ctx = _Context(tune=tune, base=base, dataset=dataset, dataset_label=label, parent=parent)
        remaining = tune.study.n_trials - _finished(study)
        if remaining > 0:
            study.optimize(
                lambda trial: _objective(trial, ctx),
                n_trials=remaining,
                timeout=tune.study.timeout,
                catch=(Exception,),
                callbacks=[
                    optuna.study.MaxTrialsCallback(
                        tune.study.n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED)
                    ),
                    _after_trial(ctx),
                ],
                gc_after_trial=True,
            )
        return _finish(study, ctx, time.perf_counter() - started)
