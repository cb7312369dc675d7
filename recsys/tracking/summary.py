"""What a run page says at a glance: a few final scalars and a description with the headline numbers.

The description is markdown in the ``mlflow.note.content`` tag, shown at the top of the run page and
beside the run in the runs table. No MLflow import: these are plain strings and numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from recsys.tracking.names import metric_name

__all__ = [
    "TEST_HEADING",
    "TrainFacts",
    "evaluate_description",
    "headline_metrics",
    "metrics_table",
    "text_description",
    "train_description",
    "train_summary_metrics",
    "with_test_result",
]

TEST_HEADING = "**Test**"
"""Starts the test result an evaluation appends to its training run's description."""

_MODEL = "bert4rec"
_SHOWN = {"bert4rec": "BERT4Rec", "most_popular": "most popular", "transitions": "transitions"}


def _shown(name: str) -> str:
    return _SHOWN.get(name, name.replace("_", " "))


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


def headline_metrics(metrics: Mapping[str, float], ks: Sequence[int]) -> dict[str, float]:
    """The metrics worth a chart: NDCG, HR and MRR at every k, coverage at the largest k.

    The full table (recall, MAP, popularity, novelty, sampled metrics) goes in the run's artifacts.
    """
    ordered = sorted(set(ks))
    names = [f"{m}@{k}" for m in ("ndcg", "hr", "mrr") for k in ordered]
    names.append(f"coverage@{ordered[-1]}")
    return {name: float(metrics[name]) for name in names if name in metrics}


def metrics_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str]) -> str:
    """A markdown table: one row per scorer, one column per metric (``ndcg@10`` shown as NDCG@10)."""
    heads = [c.replace("ndcg", "NDCG").replace("hr", "HR").replace("mrr", "MRR") for c in columns]
    lines = ["| | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(columns)]
    for name, values in rows.items():
        cells = [_fmt(values.get(c)) for c in columns]
        label = f"**{_shown(name)}**" if name == _MODEL else _shown(name)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class TrainFacts:
    """The numbers a training run's page leads with."""

    dataset: str
    model_val: Mapping[str, float]
    baselines: Mapping[str, Mapping[str, float]]
    best_epoch: int | None
    epochs: int
    max_epochs: int
    seconds: float
    stopped_early: bool
    precision: str
    resumed: bool = False
    model_name: str | None = None
    registered: str | None = None


def train_summary_metrics(facts: TrainFacts) -> dict[str, float]:
    """The few final scalars: best epoch, epochs, minutes, and the baselines' validation NDCG@10 (the
    model's best is the last value of the ``val/best_ndcg_at_10`` curve)."""
    out: dict[str, float] = {}
    if facts.best_epoch is not None:
        out["best_epoch"] = float(facts.best_epoch)
    out["epochs"] = float(facts.epochs)
    out["train_minutes"] = facts.seconds / 60.0
    for name, values in facts.baselines.items():
        if "ndcg@10" in values:
            out[metric_name(f"{name}_val_ndcg@10")] = float(values["ndcg@10"])
    return out


def train_description(facts: TrainFacts) -> str:
    """Markdown: best validation NDCG@10 against the baselines, the epochs, the time, the model."""
    ndcg = facts.model_val.get("ndcg@10")
    against = ", ".join(
        f"{_shown(name)} {_fmt(values.get('ndcg@10'))}" for name, values in facts.baselines.items()
    )
    best = f" at epoch {facts.best_epoch}" if facts.best_epoch is not None else ""
    beaten = [n for n, v in facts.baselines.items() if ndcg is not None and ndcg > v.get("ndcg@10", math.inf)]
    verdict = (
        "beats every baseline"
        if facts.baselines and len(beaten) == len(facts.baselines)
        else f"beats {', '.join(_shown(n) for n in beaten)} only"
        if beaten
        else "beats no baseline"
    )
    stop = ", early stopping" if facts.stopped_early else ""
    resumed = "; resumed from its last checkpoint" if facts.resumed else ""
    # The run page shows the first lines only until "Show more": the headline comes first.
    lines = [
        f"Best validation NDCG@10 **{_fmt(ndcg)}**{best} ({against}): {verdict}.",
        "",
        f"BERT4Rec on **{facts.dataset}**, {facts.epochs} of {facts.max_epochs} epochs{stop} in "
        f"{facts.seconds / 60:.1f} min, precision {facts.precision}{resumed}.",
        "",
        metrics_table({_MODEL: facts.model_val, **facts.baselines}, ["ndcg@10", "hr@10"]),
    ]
    if facts.model_name:
        model = f"Model: `{facts.model_name}`"
        if facts.registered:
            model += f", registered as `{facts.registered}`"
        lines += ["", model + "."]
    return "\n".join(lines)


def evaluate_description(
    split: str,
    metrics: Mapping[str, Mapping[str, float]],
    ks: Sequence[int],
    *,
    users: int,
    model: str,
    training_link: str | None,
) -> str:
    """Markdown: the evaluation table (NDCG and HR at every k), what was evaluated and its training run."""
    ordered = sorted(set(ks))
    columns = [f"ndcg@{k}" for k in ordered] + [f"hr@{k}" for k in ordered]
    lines = [
        f"{split.capitalize()} split, {users:,} users, full ranking over the catalogue.",
        "",
        metrics_table(metrics, columns),
        "",
        f"Model `{model}`; trained by {training_link or 'an untracked run'}.",
    ]
    return "\n".join(lines)


def with_test_result(description: str, model_test: Mapping[str, float], evaluate_link: str) -> str:
    """A training run's description with its latest test result (replacing an earlier one)."""
    head = description.split(f"\n\n{TEST_HEADING}", 1)[0].rstrip()
    shown = ", ".join(f"{k.upper()} {_fmt(model_test[k])}" for k in ("ndcg@10", "hr@10") if k in model_test)
    return f"{head}\n\n{TEST_HEADING} ({evaluate_link}): {shown or 'see the evaluate run'}."


def text_description(summary: str, *, preformatted: str | None = None) -> str:
    """A job's plain-text summary as a description: one line per line (markdown hard breaks), the run's
    own id left out, and ``preformatted`` (a report table) in a code block after it."""
    lines = [line for line in summary.splitlines() if line.strip() and not line.startswith("MLflow run")]
    text = "  \n".join(lines)
    return text + (f"\n\n```\n{preformatted}\n```" if preformatted else "")
