"""The data pipeline end to end: raw log -> cleaned, encoded, split interactions -> prepared directory.

:func:`build` does the work in memory (read, validate, filter, sort, deduplicate, k-core, encode,
split); :func:`prepare` adds the reuse check, the report and the atomic write. ``recsys.jobs.prepare`` is a
thin job wrapper around :func:`prepare`.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recsys.config import DataConfig
from recsys.data.clean import (
    FilterStats,
    deduplicate,
    filter_event_types,
    filter_rating,
    k_core,
    require_rows,
    sort_chronologically,
    validate,
)
from recsys.data.columns import ITEM, ROW, SPLIT, TIMESTAMP, USER
from recsys.data.fingerprint import fingerprint
from recsys.data.prepared import (
    PreparedManifest,
    check_target,
    find_reusable,
    make_manifest,
    write_prepared,
)
from recsys.data.readers import read_interactions
from recsys.data.report import DataReport, build_report, warm_up_plotting
from recsys.data.source import SourceInfo
from recsys.data.split import SplitSummary, assign_split
from recsys.data.vocab import ITEM_OFFSET, USER_OFFSET, Vocabulary, dense_codes
from recsys.io import remove_stale

__all__ = ["Built", "PrepareOutcome", "build", "prepare"]

_log = logging.getLogger("recsys.data")


@dataclass
class Built:
    """Cleaned, encoded and split interactions in memory, with everything the report needs.

    Attributes:
        interactions: ``user`` (Int32, 0..n_users-1), ``item`` (Int32, 1..n_items), ``timestamp``,
            ``row`` (original data row), ``split`` (Int8); sorted by (user, timestamp, row).
        users: user vocabulary (offset 0).
        items: item vocabulary (offset 1).
        source: how the input was read.
        input_rows: data rows read (blank lines excluded).
        input_users: distinct users among the rows read (null ids excluded).
        input_items: distinct items among the rows read (null ids excluded).
        filters: what each cleaning step removed, in order.
        split: split counts and resolved cutoffs.
        timings: seconds per stage.
    """

    interactions: pl.DataFrame
    users: Vocabulary
    items: Vocabulary
    source: SourceInfo
    input_rows: int
    input_users: int
    input_items: int
    filters: list[FilterStats]
    split: SplitSummary
    timings: dict[str, float] = field(default_factory=dict)

    def user_lengths(self) -> np.ndarray:
        """int64[n_users]: interactions per user after cleaning (the sequence lengths)."""
        return np.bincount(self.interactions[USER].to_numpy(), minlength=len(self.users))


class _Clock:
    """Accumulates wall time per stage."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(now - self._last, 4)
        self._last = now


def _reindex(
    frame: pl.DataFrame, user_ids: pl.Series, item_ids: pl.Series
) -> tuple[pl.DataFrame, Vocabulary, Vocabulary]:
    """Temporary codes -> final contiguous indices over the surviving ids (order is kept: sorted ids)."""
    users = frame[USER].to_numpy()
    items = frame[ITEM].to_numpy()
    user_alive = np.bincount(users, minlength=len(user_ids)) > 0
    item_alive = np.bincount(items, minlength=len(item_ids)) > 0
    # A code's new index is the number of surviving codes before it: a cumulative sum, one gather
    # (skipped when every code survived: then the code plus the offset is already the index).
    updates: list[pl.Expr | pl.Series] = []
    for name, codes, alive, offset in (
        (USER, users, user_alive, USER_OFFSET),
        (ITEM, items, item_alive, ITEM_OFFSET),
    ):
        if alive.all():
            updates.append((pl.col(name) + offset).cast(pl.Int32))
        else:
            table = np.cumsum(alive, dtype=np.int32) - 1 + offset
            updates.append(pl.Series(name, table[codes], dtype=pl.Int32))
    encoded = frame.with_columns(updates)
    user_vocab = Vocabulary(user_ids.filter(pl.Series(user_alive)), offset=USER_OFFSET)
    item_vocab = Vocabulary(item_ids.filter(pl.Series(item_alive)), offset=ITEM_OFFSET)
    return encoded, user_vocab, item_vocab


def build(cfg: DataConfig) -> Built:
    """Read, clean, encode and split the configured log, in memory.

    Steps: read -> null ids (error/drop) and timestamp checks -> temporary integer codes -> event-type
    filter -> rating threshold -> chronological sort (ties: file order) -> duplicate policy -> iterative
    k-core -> final indices (users 0.., items 1.., by sorted original id) -> split.

    Raises:
        DataError: a subclass for every bad input, and :class:`~recsys.data.errors.EmptyResultError`
            when the filters leave no interaction.
    """
    clock = _Clock()
    cleaning = cfg.cleaning
    frame, info = read_interactions(cfg.source)
    input_rows = frame.height
    clock.lap("read")
    frame, null_stats = validate(frame, info, cleaning.null_ids)
    require_rows(frame, null_stats, info, "cleaning.null_ids")
    # Integer codes in sorted-id order from here on: cheap sorts, bincounts and pair keys.
    user_codes, user_ids = dense_codes(frame[USER])
    item_codes, item_ids = dense_codes(frame[ITEM])
    frame = frame.with_columns(pl.Series(USER, user_codes), pl.Series(ITEM, item_codes))
    clock.lap("validate_encode")
    frame, event_stats = filter_event_types(frame, cleaning.event_types, info)
    require_rows(frame, event_stats, info, "cleaning.event_types")
    frame, rating_stats = filter_rating(frame, cleaning.rating_threshold, info)
    require_rows(frame, rating_stats, info, "cleaning.rating_threshold")
    # Ratings and event types have done their job; dropping them early saves memory on big logs.
    frame = frame.select(USER, ITEM, TIMESTAMP, ROW)
    frame = sort_chronologically(frame, len(user_ids))
    clock.lap("filter_sort")
    frame, duplicate_stats = deduplicate(frame, cleaning.duplicates, len(item_ids))
    frame, core_stats = k_core(frame, cleaning)
    require_rows(frame, core_stats, info, "cleaning.min_user_interactions / min_item_interactions")
    clock.lap("dedup_kcore")
    frame, users, items = _reindex(frame, user_ids, item_ids)
    frame, summary = assign_split(frame, cfg.split, len(users))
    frame = frame.select(USER, ITEM, TIMESTAMP, ROW, SPLIT)
    clock.lap("reindex_split")
    return Built(
        interactions=frame,
        users=users,
        items=items,
        source=info,
        input_rows=input_rows,
        input_users=len(user_ids) + null_stats.users_removed,
        input_items=len(item_ids) + null_stats.items_removed,
        filters=[null_stats, event_stats, rating_stats, duplicate_stats, core_stats],
        split=summary,
        timings=clock.timings,
    )


@dataclass(frozen=True)
class PrepareOutcome:
    """What :func:`prepare` did.

    Attributes:
        path: the prepared dataset directory.
        reused: an existing directory matched the input and config and was left as it was.
        manifest: the directory's manifest.
        report: the data report.
        timings: seconds per stage (empty when reused).
    """

    path: Path
    reused: bool
    manifest: PreparedManifest
    report: DataReport
    timings: dict[str, float] = field(default_factory=dict)


def prepare(cfg: DataConfig, *, force: bool = False, plot: bool = True) -> PrepareOutcome:
    """Prepare the dataset directory ``cfg.output_dir`` from ``cfg.source``, or reuse it.

    An existing directory is reused (nothing is read or written) when its manifest records the same
    format version, the same reuse-relevant configuration (source options, cleaning, split) and the
    same input: the same size and modification time, or else the same size and SHA-256 of the bytes.
    Otherwise the data is rebuilt into a temporary directory beside the target and renamed into place,
    so a failure leaves no partial output and a reader never sees a half-written directory.

    Args:
        cfg: the data configuration.
        force: rebuild even when the existing directory could be reused.
        plot: write ``seq_length_hist.png`` (matplotlib).
    """
    target = Path(cfg.output_dir)
    started = time.perf_counter()
    check_target(target)
    # Before the reuse check: a rerun that reuses the dataset also clears what a killed run left.
    remove_stale(target)
    quick = fingerprint(cfg.source.path, with_hash=False) if cfg.source.path.is_file() else None
    if not force and quick is not None:
        reused = find_reusable(target, cfg, quick)
        if reused is not None:
            manifest, report = reused
            _log.info("reusing the prepared dataset %s (input and config unchanged)", target)
            return PrepareOutcome(path=target, reused=True, manifest=manifest, report=report)
    _log.info("preparing %s from %s", target, cfg.source.path)
    # Hash the input in a thread while it is parsed (hashlib releases the GIL, so this is almost free),
    # and import matplotlib in another: both overlap with polars and numpy, which release it too.
    pool = ThreadPoolExecutor(max_workers=2)
    hashing = pool.submit(fingerprint, cfg.source.path, with_hash=True)
    if plot:
        pool.submit(warm_up_plotting)
    try:
        built = build(cfg)
        waited = time.perf_counter()
        source_fp = hashing.result()
        built.timings["fingerprint_wait"] = round(time.perf_counter() - waited, 4)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    report = build_report(built)
    manifest = make_manifest(cfg, built, source_fp)
    write_started = time.perf_counter()
    write_prepared(target, built, manifest, report, plot=plot)
    built.timings["write"] = round(time.perf_counter() - write_started, 4)
    built.timings["total"] = round(time.perf_counter() - started, 4)
    _log.info(
        "prepared %s in %.1f s: %s users, %s items, %s interactions",
        target,
        built.timings["total"],
        *(f"{n:,}" for n in (len(built.users), len(built.items), built.interactions.height)),
    )
    return PrepareOutcome(path=target, reused=False, manifest=manifest, report=report, timings=built.timings)
