"""The ``recommend`` job: top-k per user into atomic parquet output.

It scores users from their full history in the prepared dataset (``cfg.data.output_dir``: training,
validation and test events) and/or from a ``--histories`` file of new users, applies the seen / allow /
deny filters, and writes ``user_id, item_id, score, rank`` with the ORIGINAL ids into parts of at most
``inference.rows_per_part`` rows (a user's rows are never split), plus a ``manifest.json``
(:mod:`recsys.inference.writer`): nothing appears at ``--out`` until the whole output is there. Ranking is
:class:`recsys.inference.Recommender`'s, written by :func:`recsys.inference.batch.write_recommendations`
(a plain loop in one process, Lightning's predict loop on several devices).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from recsys.config import RecsysConfig
from recsys.data.prepared import PreparedDataset
from recsys.inference.batch import write_recommendations
from recsys.inference.recommender import Recommender
from recsys.inference.requests import JobRequest, check_k, read_request
from recsys.inference.writer import OutputManifest, check_target
from recsys.jobs.results import OutputResult
from recsys.tracking.loading import load_model
from recsys.tracking.names import dataset_name
from recsys.tracking.run import tracked_run
from recsys.tracking.summary import text_description
from recsys.training.bundle import Bundle, bundle_sha256
from recsys.training.runtime import apply_threads, resolve_device

__all__ = ["RecommendResult", "run"]

_log = logging.getLogger("recsys.recommend")


@dataclass
class RecommendResult(OutputResult):
    """The outcome of ``recsys recommend``."""

    users: int
    users_from_dataset: int
    users_from_histories: int
    unknown_users: int
    unknown_items: int
    unknown_filter_items: int
    users_per_second: float
    total_seconds: float
    world_size: int

    def summary(self) -> str:
        lines = [
            f"top-{self.k} for {self.users:,} users -> {self.rows:,} rows "
            f"in {self.parts} part(s) at {self.out}",
            f"{self.seconds:.2f} s scoring ({self.total_seconds:.2f} s in all), "
            f"{self.users_per_second:,.0f} users/s"
            + (f" on {self.world_size} processes" if self.world_size > 1 else ""),
            f"users: {self.users_from_dataset:,} from the dataset, "
            f"{self.users_from_histories:,} from --histories",
        ]
        if self.unknown_users or self.unknown_items or self.unknown_filter_items:
            lines.append(
                f"unknown ids dropped: {self.unknown_users} user(s), "
                f"{self.unknown_items} history item row(s), "
                f"{self.unknown_filter_items} allow/deny item(s)"
            )
        if self.run_id:
            lines.append(f"MLflow run: {self.run_id}")
        return "\n".join(lines)


def run(
    cfg: RecsysConfig,
    *,
    model: str | Path,
    users: str | Path = "all",
    k: int | None = None,
    out: str | Path,
    histories: str | Path | None = None,
    allow: str | Path | None = None,
    deny: str | Path | None = None,
    include_seen: bool = False,
) -> RecommendResult:
    """Top-k recommendations for every user (``users="all"``) or the users listed in a file.

    Args:
        cfg: configuration (``inference``: k, batch_size, exclude_seen, rows_per_part; ``data``:
            the prepared dataset and ``unknown_ids``; ``runtime``: accelerator, devices, strategy, threads).
        model: bundle directory or ``models:/name/version``.
        users: ``"all"`` (every dataset user, plus every --histories user) or a file of user ids.
        k: items per user (default ``cfg.inference.k``).
        out: output directory (replaced atomically if it holds a previous output).
        histories: parquet/CSV of ``user_id, item_id[, timestamp]`` rows: these users are scored from
            these histories (new users, or replacing a known user's history).
        allow: file of item ids that may be recommended (one per line, or parquet).
        deny: file of item ids that must not be recommended.
        include_seen: also recommend items already in the history.
    """
    begun = time.perf_counter()
    k = cfg.inference.k if k is None else k
    check_k(k)
    out = Path(out)
    check_target(out)
    apply_threads(cfg.runtime)
    bundle, dataset, recommender = _load(cfg, model)
    files = [Path(p) if p else None for p in (histories, allow, deny)]
    request = read_request(recommender, users, *files, dataset=dataset.path)
    exclude_seen = cfg.inference.exclude_seen and not include_seen
    manifest = _manifest(cfg, bundle, dataset, request, exclude_seen=exclude_seen, allow=allow, deny=deny)
    with tracked_run(cfg, "recommend", dataset=dataset_name(cfg)) as tracker:
        tracker.set_tags({"model": str(model)})
        _log.info("scoring %s users, top-%d each, into %s", f"{len(request.requests.histories):,}", k, out)
        started = time.perf_counter()
        written = write_recommendations(
            recommender,
            request.requests.histories,
            request.requests.row_ids,
            out,
            cfg=cfg,
            k=k,
            exclude_seen=exclude_seen,
            blocked=request.blocked,
            manifest=manifest,
        )
        result = _result(tracker.run_id, out, k, request, written, started=started, begun=begun)
        tracker.log_output(
            "recommend", result.to_json(), dict(written), description=text_description(result.summary())
        )
        return result


def _load(cfg: RecsysConfig, model: str | Path) -> tuple[Bundle, PreparedDataset, Recommender]:
    """The bundle, the prepared dataset (the known users' histories) and the Recommender over both."""
    bundle = load_model(model, cfg.tracking)
    dataset = PreparedDataset.load(cfg.data.output_dir)
    recommender = Recommender.load(
        bundle,
        known=dataset,
        device=resolve_device(cfg.runtime),
        batch_size=cfg.inference.batch_size,
        unknown_ids=cfg.data.unknown_ids,
    )
    return bundle, dataset, recommender


def _manifest(
    cfg: RecsysConfig,
    bundle: Bundle,
    dataset: PreparedDataset,
    request: JobRequest,
    *,
    exclude_seen: bool,
    allow: str | Path | None,
    deny: str | Path | None,
) -> OutputManifest:
    inputs = request.requests
    return {
        "kind": "recommendations",
        "model": {"path": str(bundle.path), "manifest_sha256": bundle_sha256(bundle)},
        "data_fingerprint": bundle.fingerprint,
        "dataset": str(dataset.path),
        "exclude_seen": exclude_seen,
        "allow": str(allow) if allow else None,
        "deny": str(deny) if deny else None,
        "unknown_ids": {
            "policy": cfg.data.unknown_ids,
            "users": inputs.unknown_users,
            "history_items": inputs.unknown_items,
            "filter_items": request.unknown_filter_items,
        },
        "inputs": request.sources,
    }


def _result(
    run_id: str | None,
    out: Path,
    k: int,
    request: JobRequest,
    written: OutputManifest,
    *,
    started: float,
    begun: float,
) -> RecommendResult:
    inputs, seconds = request.requests, time.perf_counter() - started
    return RecommendResult(
        run_id=run_id,
        out=out,
        k=k,
        users=len(inputs.histories),
        rows=int(written["rows"]),
        parts=len(written["parts"]),
        users_from_dataset=inputs.from_known,
        users_from_histories=inputs.from_histories,
        unknown_users=inputs.unknown_users,
        unknown_items=inputs.unknown_items,
        unknown_filter_items=request.unknown_filter_items,
        seconds=seconds,
        users_per_second=len(inputs.histories) / max(seconds, 1e-9),
        total_seconds=time.perf_counter() - begun,
        world_size=int(written.get("world_size", 1)),
        manifest=written,
    )
