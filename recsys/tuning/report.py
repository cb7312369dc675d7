"""The study's results: ``TuneResult``, the best trial's config as ``best.yaml``, plots and ``study.json``."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FixedTrial, FrozenTrial, TrialState

from recsys.config import RecsysConfig, to_yaml
from recsys.training.fit import MONITOR
from recsys.tuning.objective import TrialContext, suggest_config
from recsys.tuning.space import TuneConfig
from recsys.tuning.study import mask_url

__all__ = ["TuneResult", "finish"]

_log = logging.getLogger(__name__)

_PLOTS = ("optimization_history", "intermediate_values", "parallel_coordinate", "param_importances")


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


def finish(study: optuna.Study, ctx: TrialContext, seconds: float) -> TuneResult:
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
    result = TuneResult(
        study_name=study.study_name,
        storage=mask_url(ctx.tune.study.storage),
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
    parent.set_description(_description(result))
    return result


def _description(result: TuneResult) -> str:
    """Markdown for the study's parent run: the trial counts, the best trial against the base config."""
    lines = [
        f"Optuna study **{result.study_name}**: {result.n_complete} complete, {result.n_pruned} pruned, "
        f"{result.n_failed} failed trial(s).",
    ]
    if result.best_trial is not None and result.best_value is not None:
        base = f" (base config: {result.baseline_value:.4f})" if result.baseline_value is not None else ""
        lines += [
            "",
            f"Best: trial {result.best_trial}, validation NDCG@10 **{result.best_value:.4f}**{base}; "
            "its config is `best.yaml` in the artifacts.",
            "",
            *(f"- `{k}` = {v!r}" for k, v in result.best_params.items()),
        ]
    if result.stopped_reason:
        lines += ["", f"Stopped early: {result.stopped_reason}."]
    return "\n".join(lines)
