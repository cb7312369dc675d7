"""The ``recommend`` job: top-k per user into atomic parquet output.

It scores users from their full history in the prepared dataset (``cfg.data.output_dir``: training,
validation and test events) and/or from a ``--histories`` file of new users, applies the seen / allow /
deny filters, and writes ``user_id, item_id, score, rank`` with the ORIGINAL ids into parts of at most
``inference.rows_per_part`` rows (a user's rows are never split), plus a ``manifest.json``
(:mod:`recsys.inference.writer`): nothing appears at ``--out`` until the whole output is there. Scoring is
:func:`recsys.inference.predict.write_recommendations` (Lightning's predict loop, one or many devices).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config import RecsysConfig
from recsys.inference.predict import write_recommendations
from recsys.inference.recommend import blocked_items
from recsys.inference.requests import check_k, gather_inputs, item_list
from recsys.inference.writer import check_target
from recsys.tracking.loading import load_model
from recsys.tracking.names import dataset_name
from recsys.tracking.run import tracked_run
from recsys.training.bundle import bundle_sha256
from recsys.training.runtime import apply_threads

__all__ = ["RecommendResult", "run"]

_log = logging.getLogger("recsys.recommend")


@dataclass
class RecommendResult:
    """The outcome of ``recsys recommend``."""

    run_id: str | None
    out: Path
    k: int
    users: int
    rows: int
    parts: int
    users_from_dataset: int
    users_from_histories: int
    unknown_users: int
    unknown_items: int
    unknown_filter_items: int
    seconds: float
    users_per_second: float
    total_seconds: float
    world_size: int
    manifest: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "out": str(self.out),
            "k": self.k,
            "users": self.users,
            "rows": self.rows,
            "parts": self.parts,
            "users_from_dataset": self.users_from_dataset,
            "users_from_histories": self.users_from_histories,
            "unknown_users": self.unknown_users,
            "unknown_items": self.unknown_items,
            "unknown_filter_items": self.unknown_filter_items,
            "seconds": round(self.seconds, 4),
            "users_per_second": round(self.users_per_second, 1),
            "total_seconds": round(self.total_seconds, 4),
            "world_size": self.world_size,
        }

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
    bundle = load_model(model, cfg.tracking)
    policy = cfg.data.unknown_ids
    inputs = gather_inputs(cfg, bundle, users, Path(histories) if histories is not None else None)
    allow_idx, unknown_allow = item_list(bundle, Path(allow) if allow else None, policy)
    deny_idx, unknown_deny = item_list(bundle, Path(deny) if deny else None, policy, deny=True)
    blocked = blocked_items(bundle.n_items, allow=allow_idx, deny=deny_idx)
    exclude_seen = cfg.inference.exclude_seen and not include_seen
    apply_threads(cfg.runtime)

    manifest = {
        "kind": "recommendations",
        "model": {"path": str(bundle.path), "manifest_sha256": bundle_sha256(bundle)},
        "data_fingerprint": bundle.fingerprint,
        "dataset": str(inputs.dataset.path) if inputs.dataset else None,
        "exclude_seen": exclude_seen,
        "allow": str(allow) if allow else None,
        "deny": str(deny) if deny else None,
        "unknown_ids": {
            "policy": policy,
            "users": inputs.unknown_users,
            "history_items": inputs.unknown_items,
            "filter_items": unknown_allow + unknown_deny,
        },
        "inputs": inputs.sources,
    }
    with tracked_run(cfg, "recommend", dataset=dataset_name(cfg)) as tracker:
        tracker.set_tags({"model": str(model)})
        _log.info("scoring %s users, top-%d each, into %s", f"{len(inputs.histories):,}", k, out)
        started = time.perf_counter()
        written = write_recommendations(
            bundle.model,
            inputs.histories,
            inputs.row_ids,
            bundle.items.ids,
            out,
            cfg=cfg,
            k=k,
            exclude_seen=exclude_seen,
            blocked=blocked,
            manifest=manifest,
        )
        seconds = time.perf_counter() - started
        result = RecommendResult(
            run_id=tracker.run_id,
            out=out,
            k=k,
            users=len(inputs.histories),
            rows=int(written["rows"]),
            parts=len(written["parts"]),
            users_from_dataset=inputs.from_dataset,
            users_from_histories=inputs.from_file,
            unknown_users=inputs.unknown_users,
            unknown_items=inputs.unknown_items,
            unknown_filter_items=unknown_allow + unknown_deny,
            seconds=seconds,
            users_per_second=len(inputs.histories) / max(seconds, 1e-9),
            total_seconds=time.perf_counter() - begun,
            world_size=int(written.get("world_size", 1)),
            manifest=written,
        )
        tracker.log_output("recommend", result.to_json(), written)
        return result
