"""The ``evaluate`` job: full-ranking metrics of a model bundle and the baselines, in one table.

Protocol (the published ML-1M one): every user with a target in the split is ranked over the whole
catalogue, already-seen items excluded (``eval.exclude_seen``), at the cut-offs ``eval.ks``. The test split
gives the model the full history up to the test target, validation item included
(``PreparedDataset.history("test")``); the validation split gives the training events. The model and the
baselines (most popular, last-item transitions, both fitted on the training events only) go through the
same :func:`recsys.evaluation.protocol.evaluate`, so their numbers are comparable; each is ranked once,
and the recommendation-popularity table is counted from the same top-k lists. Sampled metrics
(``eval.sampled_negatives``) are reported as well when asked for, always under ``sampled_*`` names.

The MLflow run is linked to the model's training run, which also gets the test metrics
(:mod:`recsys.tracking.lineage`). Written to ``--out`` (default ``<train.output_dir>/evaluation/<split>/``)
and logged to the MLflow run:
``metrics.csv`` and ``metrics.json``, the breakdowns by history length and target popularity (csv,
parquet, png), and the recommendation-popularity table and plot (share of top-k slots per
catalogue-popularity decile against the share of training interactions in that decile).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl
import torch

from recsys.config import RecsysConfig
from recsys.data.fingerprint import dataset_fingerprint
from recsys.data.prepared import PreparedDataset
from recsys.data.sequences import Sequences
from recsys.evaluation.baselines import fit_baselines
from recsys.evaluation.breakdown import breakdowns, save_breakdown
from recsys.evaluation.popularity import plot_popularity, recommendation_popularity
from recsys.evaluation.protocol import EvalResult, Sampling, Scorer, evaluate
from recsys.inference.recommender import Recommender
from recsys.io import atomic_dir
from recsys.jobs.results import result_json
from recsys.tracking.lineage import TrainingRun, find_training_run, link_evaluation, log_test_on_training_run
from recsys.tracking.loading import load_model
from recsys.tracking.names import TEST, VAL, dataset_name, run_name, section_metric
from recsys.tracking.run import tracked_run
from recsys.tracking.summary import evaluate_description, headline_metrics
from recsys.tracking.tracker import Tracker
from recsys.training.bundle import Bundle, bundle_sha256, check_compatible
from recsys.training.datamodule import training_data
from recsys.training.runtime import apply_threads, resolve_device

__all__ = ["MODEL_NAME", "EvaluateResult", "run"]

MODEL_NAME = "bert4rec"
"""The model's name in tables (its metrics are ``test/ndcg_at_10``...); baselines follow it."""
Split = Literal["test", "validation"]

_log = logging.getLogger("recsys.evaluate")


@dataclass
class EvaluateResult:
    """The outcome of ``recsys evaluate``: metrics per scorer (model first, then baselines)."""

    run_id: str | None
    split: str
    model: str
    data: str
    users: int
    ks: list[int]
    metrics: dict[str, dict[str, float]]
    fingerprint_match: bool
    exclude_seen: bool
    output_dir: Path
    artifacts: list[str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return result_json(self, digits=3)

    def summary(self) -> str:
        """The report table: NDCG and HR at every k, then coverage at the largest k, per scorer."""
        k_max = max(self.ks)
        columns = [f"ndcg@{k}" for k in self.ks] + [f"hr@{k}" for k in self.ks] + [f"coverage@{k_max}"]
        sampled = sorted({m for v in self.metrics.values() for m in v if m.startswith("sampled_")})
        lines = [
            f"{self.split} split, {self.users:,} users, full ranking over the catalogue"
            + (", seen items excluded" if self.exclude_seen else ""),
        ]
        if not self.fingerprint_match:
            lines.append("WARNING: the model was trained on different data (fingerprint mismatch)")
        lines += ["", _table(self.metrics, columns)]
        if sampled:
            lines += [
                "",
                "sampled metrics (NOT comparable with full-ranking ones):",
                _table(self.metrics, sampled),
            ]
        lines.append(f"\nartifacts: {self.output_dir}")
        if self.run_id:
            lines.append(f"MLflow run: {self.run_id}")
        return "\n".join(lines)


def _table(metrics: Mapping[str, Mapping[str, float]], columns: list[str]) -> str:
    width = max(12, *(len(c) + 2 for c in columns))
    head = f"{'':<24}" + "".join(f"{c:>{width}}" for c in columns)
    rows = [head]
    for name, values in metrics.items():
        rows.append(f"{name:<24}" + "".join(f"{values.get(c, float('nan')):>{width}.4f}" for c in columns))
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------ the job
def _write_outputs(
    directory: Path,
    results: Mapping[str, EvalResult],
    popularity: pl.DataFrame,
    cfg: RecsysConfig,
    k_plot: int,
) -> list[Path]:
    metrics = {name: r.metrics for name, r in results.items()}
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    names = list(next(iter(metrics.values())))
    pl.DataFrame(
        [{"scorer": name, **{m: values.get(m) for m in names}} for name, values in metrics.items()]
    ).write_csv(directory / "metrics.csv")
    written = [directory / "metrics.json", directory / "metrics.csv"]
    plotted = (f"ndcg@{k_plot}", f"hr@{k_plot}")
    for by, table in breakdowns(results, cfg.eval).items():
        written += save_breakdown(table, directory, f"breakdown_{by}", metrics=plotted).values()
    popularity.write_csv(directory / "recommendation_popularity.csv")
    popularity.write_parquet(directory / "recommendation_popularity.parquet")
    written += [
        directory / "recommendation_popularity.csv",
        directory / "recommendation_popularity.parquet",
        plot_popularity(popularity, directory / "recommendation_popularity.png", k_plot),
    ]
    return written


def _save(
    target: Path, results: Mapping[str, EvalResult], popularity: pl.DataFrame, cfg: RecsysConfig, k_plot: int
) -> list[Path]:
    """Write every table and plot into a staging folder and publish it at ``target``
    (:func:`recsys.io.atomic_dir`: the previous evaluation of this split stays until the new one is in)."""
    with atomic_dir(target) as staging:
        written = _write_outputs(staging, results, popularity, cfg, k_plot)
    return [target / p.name for p in written]


def _evaluate(
    cfg: RecsysConfig,
    name: str,
    scorer: Scorer,
    dataset: PreparedDataset,
    histories: Sequences,
    targets: Sequences,
    *,
    max_history: int,
    device: str,
) -> EvalResult:
    _log.info("scoring %s: %s users over %s items", name, f"{len(targets):,}", f"{dataset.n_items:,}")
    sampling = None
    if cfg.eval.sampled_negatives:
        sampling = Sampling(
            cfg.eval.sampled_negatives,
            cfg.eval.sampled_by,
            dataset.item_counts(),
            # Every scorer gets the same seeded negatives.
            torch.Generator().manual_seed(cfg.train.seed),
        )
    return evaluate(
        scorer,
        histories,
        targets,
        ks=cfg.eval.ks,
        n_items=dataset.n_items,
        item_counts=dataset.item_counts(),
        exclude_seen=cfg.eval.exclude_seen,
        batch_size=cfg.eval.batch_size,
        max_history=max_history,
        per_user=True,
        keep_top=True,
        sampling=sampling,
        device=device,
    )


def _score_all(
    cfg: RecsysConfig, bundle: Bundle, dataset: PreparedDataset, split: Split, device: str
) -> dict[str, EvalResult]:
    """The model, then the baselines, through the same protocol on the same users."""
    # The events the model trained on, by its own training config: the baselines are fitted on
    # them, and a validation run scores only the users whose validation events were held out.
    trained = training_data(dataset, bundle.config.train)
    histories = dataset.history(split)
    targets = dataset.targets(split) if split == "test" else trained.val_targets
    recommender = Recommender.load(bundle, device=device)
    scorers = {MODEL_NAME: recommender, **fit_baselines(trained.history, dataset.n_items)}
    return {
        name: _evaluate(
            cfg, name, scorer, dataset, histories, targets, max_history=recommender.max_history, device=device
        )
        for name, scorer in scorers.items()
    }


def _log_run(
    tracker: Tracker, split: str, results: Mapping[str, EvalResult], directory: Path, ks: list[int]
) -> None:
    """Headline metrics as charts (the model's in ``test/``, each baseline's in ``test.<name>/``), every
    table and plot as artifacts (``evaluation/metrics.csv`` holds all of them)."""
    if tracker.enabled:
        _log.info("logging metrics and artifacts to MLflow run %s", tracker.run_id)
    section = TEST if split == "test" else VAL
    for name, result in results.items():
        if name == MODEL_NAME:
            shown = headline_metrics(result.metrics, ks)
            tracker.log_metrics({section_metric(section, m): v for m, v in shown.items()})
        else:
            shown = headline_metrics(result.metrics, [10 if 10 in ks else max(ks)])
            shown = {m: v for m, v in shown.items() if m.startswith(("ndcg", "hr"))}
            tracker.log_metrics({section_metric(f"{section}.{name}", m): v for m, v in shown.items()})
    tracker.log_artifact(directory, "evaluation")


def _link_training_run(tracker: Tracker, bundle: Bundle) -> TrainingRun | None:
    """Find the run that trained ``bundle`` (any copy of it) and link this run to it."""
    training = find_training_run(tracker, bundle_sha256(bundle)) if tracker.enabled else None
    if training is not None:
        link_evaluation(tracker, training)
    return training


def _describe(tracker: Tracker, result: EvaluateResult, training: TrainingRun | None, run_label: str) -> None:
    model_metrics = result.metrics[MODEL_NAME]
    tracker.set_description(
        evaluate_description(
            result.split,
            result.metrics,
            result.ks,
            users=result.users,
            model=result.model,
            training_link=training.link if training is not None else None,
        )
    )
    if training is not None and result.split == "test":
        log_test_on_training_run(tracker, training, headline_metrics(model_metrics, result.ks), run_label)


def run(
    cfg: RecsysConfig,
    *,
    model: str | Path,
    data: str | Path,
    split: Split = "test",
    out: str | Path | None = None,
) -> EvaluateResult:
    """Evaluate a model bundle (directory or ``models:/name/version``) on a prepared dataset.

    Args:
        cfg: configuration; ``eval`` sets ks, seen-item exclusion, sampled metrics, batch size and the
            breakdown buckets; ``runtime`` the device and threads; ``train.seed`` the negative sampling.
        model: bundle directory or ``models:/name/version``.
        data: the prepared dataset directory the model is evaluated on.
        split: ``test`` (history = train + validation events) or ``validation`` (history = train events).
        out: where the artifacts go; default ``<train.output_dir>/evaluation/<split>``.
    """
    if split not in ("test", "validation"):
        raise ValueError(f"split must be 'test' or 'validation', got {split!r}")
    started = time.perf_counter()
    label = run_name("evaluate", cfg, detail=split)
    with tracked_run(cfg, "evaluate", dataset=dataset_name(cfg), run_name=label) as tracker:
        _log.info("loading the model %s and the prepared dataset %s", model, data)
        bundle = load_model(model, cfg.tracking)
        dataset = PreparedDataset.load(data)
        match = check_compatible(bundle, dataset)
        tracker.set_tags({"model": str(model), "split": split, "fingerprint_match": str(match).lower()})
        training = _link_training_run(tracker, bundle)
        tracker.log_input_fingerprint(dataset_fingerprint(dataset), source=dataset.path, context=split)
        apply_threads(cfg.runtime)

        results = _score_all(cfg, bundle, dataset, split, resolve_device(cfg.runtime))
        k_plot = 10 if 10 in cfg.eval.ks else max(cfg.eval.ks)
        _log.info("share of top-%d slots per catalogue-popularity decile, for every scorer", k_plot)
        # From the lists the metrics were computed on: nothing is ranked twice.
        tops = {name: r.top for name, r in results.items() if r.top is not None}
        popularity = recommendation_popularity(tops, dataset.item_counts(), dataset.n_items, k=k_plot)

        target = Path(out) if out is not None else Path(cfg.train.output_dir) / "evaluation" / split
        _log.info("writing metrics, breakdowns (history length, target popularity) and plots to %s", target)
        written = _save(target, results, popularity, cfg, k_plot)
        _log_run(tracker, split, results, target, cfg.eval.ks)
        result = EvaluateResult(
            run_id=tracker.run_id,
            split=split,
            model=str(model),
            data=str(dataset.path),
            users=int(next(iter(results.values())).metrics["users"]),
            ks=sorted(set(cfg.eval.ks)),
            metrics={name: r.metrics for name, r in results.items()},
            fingerprint_match=match,
            exclude_seen=cfg.eval.exclude_seen,
            output_dir=target,
            artifacts=[p.name for p in written],
            seconds=time.perf_counter() - started,
        )
        tracker.log_metrics({"users": result.users, "seconds": result.seconds})
        _describe(tracker, result, training, label)
        return result
