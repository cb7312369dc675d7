"""One trial: the search-space function (trial -> validated ``RecsysConfig``), pruning, and the objective.

The objective trains with ``recsys.training.fit.fit``, the function ``recsys train`` runs, inside a nested
MLflow run, reports validation NDCG@10 every epoch (:class:`PruningCallback`) and returns the best value.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as L
from optuna.trial import BaseTrial
from pydantic import ValidationError

from recsys.config import ConfigError, RecsysConfig, apply_overrides
from recsys.data.prepared import PreparedDataset
from recsys.tracking.curves import log_learning_curve
from recsys.tracking.run import tracked_run
from recsys.tracking.tracker import Tracker
from recsys.training.fit import MONITOR, fit
from recsys.tuning.space import CategoricalParam, FloatParam, IntParam, TuneConfig, selected_section
from recsys.tuning.tune_file import set_arg

__all__ = ["InvalidTrialConfigError", "PruningCallback", "TrialContext", "objective", "suggest_config"]


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
        model = selected_section(raw, section)
        if model is None or leaf not in model.model_fields:
            continue  # conditional: the chosen loss kind has no such setting
        chosen[key] = _suggest(trial, key, spec)
        raw = apply_overrides(raw, [set_arg(key, chosen[key])])
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
    model = selected_section(raw, section)
    node: Any = raw
    for part in section:
        node = node.get(part) if isinstance(node, dict) else None
    if model is None or not isinstance(node, dict):
        return
    prefix = ".".join(section)
    for name in list(node):
        if name not in model.model_fields and f"{prefix}.{name}" not in explicit:
            del node[name]


class PruningCallback(L.Callback):
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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metric = trainer.callback_metrics.get(self.monitor)
        if metric is None:
            return
        value = float(metric)
        epoch = int(trainer.current_epoch) + 1  # counted from 1, as in the log and MLflow
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
class TrialContext:
    """What every trial of this worker shares."""

    tune: TuneConfig
    base: RecsysConfig
    dataset: PreparedDataset
    dataset_label: str
    parent: Tracker
    trials_run: int = 0
    failures_in_a_row: int = 0
    stopped_reason: str | None = None


def objective(trial: optuna.Trial, ctx: TrialContext) -> float:
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
            run_name=f"{ctx.tune.study.name} trial {trial.number}",
            parent_run_id=ctx.parent.run_id,
        ) as tracker:
            tracker.set_tags(
                {"optuna.study": ctx.tune.study.name, "optuna.trial": trial.number, "state": "running"}
            )
            tracker.log_params({f"suggested.{k}": v for k, v in trial.params.items()})
            _train_trial(trial, ctx, cfg, tracker, record)
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


def _train_trial(
    trial: optuna.Trial, ctx: TrialContext, cfg: RecsysConfig, tracker: Tracker, record: dict[str, Any]
) -> None:
    """``fit`` the trial's config with pruning, and fill ``record`` (value, state), the run's tags and its
    description."""
    pruning = PruningCallback(trial)
    logger = tracker.lightning_logger()
    try:
        fitted = fit(
            cfg,
            ctx.dataset,
            loggers=[logger] if logger else [],
            callbacks=[pruning, *tracker.lightning_callbacks()],
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
    tracker.set_description(_trial_description(trial, ctx.tune.study.name, record, reason))


def _trial_description(trial: BaseTrial, study: str, record: dict[str, Any], reason: str | None) -> str:
    """Markdown for a trial's run: its value (or why it was pruned) and the sampled values."""
    value = record.get("value")
    shown = f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "–"
    best = record.get("best_epoch")
    head = f"Trial {trial.number} of study **{study}**: best validation NDCG@10 **{shown}**"
    head += f" at epoch {best}" if best else ""
    head += f" of {record.get('epochs', 0)}" + (f"; pruned: {reason}" if reason else "") + "."
    params = "\n".join(f"- `{k}` = {v!r}" for k, v in trial.params.items())
    return head + ("\n\n" + params if params else "")


def _close_trial_dir(folder: Path, record: dict[str, Any], *, keep_checkpoints: bool) -> None:
    """Leave ``trial.json`` (params, state, value, learning curve); drop checkpoints unless kept."""
    if not keep_checkpoints:
        # Nothing reads them after the trial (best.yaml retrains), and 20 trials of a real catalogue
        # would leave hundreds of MB behind.
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trial.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
