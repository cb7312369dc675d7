"""The ``similar-items`` job: the ``k`` nearest items of every item by output-embedding cosine, into atomic
parquet output (``item_id, similar_item_id, score, rank``), for "more like this" shelves."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recsys.config import RecsysConfig
from recsys.data.staging import writing
from recsys.inference.parts import RANK, SCORE, SIMILAR_ITEM_ID, IdTable, PartBuffer
from recsys.inference.recommend import ITEM_ID, TopK
from recsys.inference.requests import check_k
from recsys.inference.similar import similar_items
from recsys.inference.writer import (
    PartWriter,
    check_target,
    create_staging,
    discard,
    publish,
    read_manifest,
    write_manifest,
)
from recsys.tracking.loading import load_model
from recsys.tracking.names import dataset_name
from recsys.tracking.run import tracked_run
from recsys.training.bundle import Bundle, bundle_sha256
from recsys.training.runtime import apply_threads, resolve_device

__all__ = ["SimilarItemsResult", "run"]

_log = logging.getLogger("recsys.similar_items")


@dataclass
class SimilarItemsResult:
    """The outcome of ``recsys similar-items``."""

    run_id: str | None
    out: Path
    k: int
    items: int
    rows: int
    parts: int
    seconds: float
    manifest: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "out": str(self.out),
            "k": self.k,
            "items": self.items,
            "rows": self.rows,
            "parts": self.parts,
            "seconds": round(self.seconds, 4),
        }

    def summary(self) -> str:
        lines = [
            f"{self.k} similar items for {self.items:,} items -> {self.rows:,} rows in {self.parts} part(s) "
            f"at {self.out} ({self.seconds:.2f} s)"
        ]
        if self.run_id:
            lines.append(f"MLflow run: {self.run_id}")
        return "\n".join(lines)


def _manifest(bundle: Bundle, k: int, rows_per_part: int) -> dict[str, Any]:
    return {
        "kind": "similar_items",
        "model": {"path": str(bundle.path), "manifest_sha256": bundle_sha256(bundle)},
        "data_fingerprint": bundle.fingerprint,
        "k": k,
        "items": bundle.n_items,
        "similarity": "cosine of output item embeddings",
        "rows_per_part": rows_per_part,
        "columns": [ITEM_ID, SIMILAR_ITEM_ID, SCORE, RANK],
    }


def run(cfg: RecsysConfig, *, model: str | Path, k: int | None = None, out: str | Path) -> SimilarItemsResult:
    """The ``k`` nearest items of every item by output-embedding cosine, into ``out`` (atomic parquet:
    ``item_id, similar_item_id, score, rank``).

    Args:
        model: bundle directory or ``models:/name/version``.
        k: similar items per item (default ``cfg.inference.k``).
        out: output directory (replaced atomically if it holds a previous output).
    """
    k = cfg.inference.k if k is None else k
    check_k(k)
    out = Path(out)
    check_target(out)
    bundle = load_model(model, cfg.tracking)
    apply_threads(cfg.runtime)
    per_part = max(1, cfg.inference.rows_per_part // k)
    item_ids = bundle.items.ids
    # Query rows are item indices 1..n_items; index 0 of row_ids is a placeholder so that gather works.
    to_table = IdTable(pl.concat([item_ids.head(1), item_ids]), item_ids, ITEM_ID, SIMILAR_ITEM_ID)
    manifest = _manifest(bundle, k, cfg.inference.rows_per_part)
    with tracked_run(cfg, "similar-items", dataset=dataset_name(cfg)) as tracker:
        tracker.set_tags({"model": str(model)})
        _log.info("the %d most similar items of each of %s items, into %s", k, f"{bundle.n_items:,}", out)
        with writing(out, elsewhere="another --out"):
            staging = create_staging(out)
        started = time.perf_counter()
        try:
            with writing(out, elsewhere="another --out"):
                buffer = PartBuffer(PartWriter(staging), per_part, to_table)
                blocks: Iterable[TopK] = similar_items(
                    bundle.model, k, batch_size=cfg.inference.batch_size, device=resolve_device(cfg.runtime)
                )
                for top in blocks:
                    buffer.add(top)
                buffer.flush()
                write_manifest(staging, {**manifest, "world_size": 1})
                publish(staging, out)
        except BaseException:
            discard(staging)
            raise
        written = read_manifest(out)
        result = SimilarItemsResult(
            run_id=tracker.run_id,
            out=out,
            k=k,
            items=bundle.n_items,
            rows=int(written["rows"]),
            parts=len(written["parts"]),
            seconds=time.perf_counter() - started,
            manifest=written,
        )
        tracker.log_output("similar_items", result.to_json(), written)
        return result
