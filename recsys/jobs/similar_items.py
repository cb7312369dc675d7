"""The ``similar-items`` job: the ``k`` nearest items of every item by output-embedding cosine, into atomic
parquet output (``item_id, similar_item_id, score, rank``), for "more like this" shelves."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from recsys.config import RecsysConfig
from recsys.inference.ids import ITEM_ID, RANK, SCORE, SIMILAR_ITEM_ID, IdTable
from recsys.inference.parts import write_parts
from recsys.inference.recommender import Recommender
from recsys.inference.requests import check_k
from recsys.inference.writer import OutputManifest, check_target
from recsys.jobs.results import OutputResult
from recsys.tracking.loading import load_model
from recsys.tracking.names import dataset_name
from recsys.tracking.run import tracked_run
from recsys.tracking.summary import text_description
from recsys.training.bundle import Bundle, bundle_sha256
from recsys.training.runtime import apply_threads, resolve_device

__all__ = ["SimilarItemsResult", "run"]

_log = logging.getLogger("recsys.similar_items")


@dataclass
class SimilarItemsResult(OutputResult):
    """The outcome of ``recsys similar-items``."""

    items: int

    def summary(self) -> str:
        lines = [
            f"{self.k} similar items for {self.items:,} items -> {self.rows:,} rows in {self.parts} part(s) "
            f"at {self.out} ({self.seconds:.2f} s)"
        ]
        if self.run_id:
            lines.append(f"MLflow run: {self.run_id}")
        return "\n".join(lines)


def _manifest(bundle: Bundle, k: int, rows_per_part: int) -> OutputManifest:
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
    # Query rows are item indices 1..n_items: row_offset 1 names them by item_ids.
    to_table = IdTable(item_ids, item_ids, ITEM_ID, SIMILAR_ITEM_ID, row_offset=1)
    manifest = _manifest(bundle, k, cfg.inference.rows_per_part)
    with tracked_run(cfg, "similar-items", dataset=dataset_name(cfg)) as tracker:
        tracker.set_tags({"model": str(model)})
        _log.info("the %d most similar items of each of %s items, into %s", k, f"{bundle.n_items:,}", out)
        started = time.perf_counter()
        recommender = Recommender.load(
            bundle, device=resolve_device(cfg.runtime), batch_size=cfg.inference.batch_size
        )
        blocks = recommender.similar_topk(k)
        written = write_parts(blocks, out, per_part=per_part, to_table=to_table, manifest=manifest)
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
        tracker.log_output(
            "similar_items", result.to_json(), dict(written), description=text_description(result.summary())
        )
        return result
