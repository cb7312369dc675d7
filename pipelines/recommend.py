"""The ``recommend`` and ``similar-items`` jobs: top-k per user (or per item) into atomic parquet output.

``recommend`` scores users from their full history in the prepared dataset (``cfg.data.output_dir``:
training, validation and test events) and/or from a ``--histories`` file of new users, applies the seen /
allow / deny filters, and writes ``user_id, item_id, score, rank`` with the ORIGINAL ids into parts of at
most ``inference.rows_per_part`` rows (a user's rows are never split), plus a ``manifest.json``
(:mod:`recsys.inference.writer`): nothing appears at ``--out`` until the whole output is there.

Scoring goes through Lightning's predict loop (:class:`TopKModule`, :class:`PartsWriter`) with
``train.accelerator`` / ``devices`` / ``strategy``: every rank scores every ``world_size``-th batch of one
shared plan and writes its own ``part-rank{r}-*.parquet`` files into the shared staging directory; rank 0
writes the manifest and publishes after a barrier. One process uses the same path with one device: on
ML-1M a Trainer with one device and a plain Python loop took the same CPU time (2.72 s vs 2.76 s, median
of five alternating runs on one thread), so there is one code path, exercised by every run.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from pipelines.tracking import Tracker, tracked_run
from pipelines.train import dataset_name
from recsys.config import ConfigError, RecsysConfig
from recsys.data.errors import UnknownIdError
from recsys.data.prepared import PreparedDataset
from recsys.data.sequences import Sequences
from recsys.inference.recommend import (
    ITEM_ID,
    USER_ID,
    TopK,
    blocked_items,
    encode_known,
    histories_from_frame,
    plan_batches,
    read_histories_file,
    read_id_file,
    select_rows,
    topk_rows,
)
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
from recsys.model.bert4rec import BERT4Rec
from recsys.training.bundle import Bundle, BundleError, load_bundle
from recsys.training.fit import dataset_fingerprint

__all__ = [
    "RecommendResult",
    "SimilarItemsResult",
    "bundle_sha256",
    "check_compatible",
    "load_model",
    "resolve_device",
    "run",
    "run_similar_items",
    "write_recommendations",
]

SIMILAR_ITEM_ID = "similar_item_id"
SCORE = "score"
RANK = "rank"


# ------------------------------------------------------------------------------------------ shared
def load_model(model: str | Path, cfg: RecsysConfig) -> Bundle:
    """Load a bundle from a directory or a ``models:/name/version`` registry URI (looked up in the
    tracking store of ``cfg.tracking``)."""
    if isinstance(model, str) and model.startswith("models:/"):
        # Imported only for registry URIs: it downloads through MLflow, which a plain directory never needs.
        from pipelines.registry import resolve_model_uri
        from pipelines.tracking import resolve_tracking_uri

        return load_bundle(resolve_model_uri(model, tracking_uri=resolve_tracking_uri(cfg.tracking)))
    return load_bundle(Path(model))


def bundle_sha256(bundle: Bundle) -> str:
    """SHA-256 of the bundle's manifest (which holds the SHA-256 of every other bundle file)."""
    return hashlib.sha256((bundle.path / "manifest.json").read_bytes()).hexdigest()


def resolve_device(cfg: RecsysConfig) -> str:
    """The torch device for ``cfg.train.accelerator``: cuda when asked (or ``auto`` and present), else cpu."""
    accelerator = cfg.train.accelerator.lower()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    if accelerator == "mps":
        return "mps"
    return "cpu"


def check_compatible(bundle: Bundle, dataset: PreparedDataset) -> bool:
    """Whether ``bundle`` was trained on ``dataset``; warns when not, raises when the items differ.

    Returns True when the data fingerprints match. Different fingerprints with the same item vocabulary
    (e.g. the data was re-prepared with other options) only warn: the model can still score, but its
    numbers do not describe the data it was trained on. Different item vocabularies cannot be scored.
    """
    if bundle.items != dataset.items:
        raise BundleError(
            f"{bundle.path}: the model's {bundle.n_items} items are not the items of {dataset.path} "
            f"({dataset.n_items}); evaluate/recommend with the dataset the model was trained on"
        )
    expected = dataset_fingerprint(dataset)
    if bundle.fingerprint == expected:
        return True
    warnings.warn(
        f"DATA FINGERPRINT MISMATCH: the model {bundle.path} was trained on data with fingerprint "
        f"{bundle.fingerprint[:12] or '(none)'}..., but {dataset.path} has {expected[:12]}... "
        "(different source file or preparation settings). Results may not be comparable.",
        UserWarning,
        stacklevel=2,
    )
    return False


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k} (--k / inference.k)")


@dataclass
class _Table:
    """TopK -> arrow table with original ids (a picklable callable: it travels to DDP processes)."""

    row_ids: pl.Series  # original id of every history row (or of every item, for similar-items)
    item_ids: pl.Series  # original item ids in index order (index 1 first)
    row_column: str
    item_column: str

    def __call__(self, top: TopK) -> pa.Table:
        users, items, scores, rank = top.to_long()
        return pl.DataFrame(
            {
                self.row_column: self.row_ids.gather(users),
                self.item_column: self.item_ids.gather(items.astype(np.int64) - 1),  # index 1 = ids[0]
                SCORE: scores,
                RANK: rank,
            }
        ).to_arrow()


def _concat(tops: list[TopK]) -> TopK:
    return TopK(
        np.concatenate([t.users for t in tops]),
        np.concatenate([t.items for t in tops]),
        np.concatenate([t.scores for t in tops]),
    )


class _PartBuffer:
    """Collects TopK batches and writes a part every ``rows_per_part // k`` users (a user is never split).

    Within a part, rows are sorted by history row, so a single process writes users in input order.
    """

    def __init__(self, writer: PartWriter, per_part: int, to_table: Callable[[TopK], pa.Table]) -> None:
        self.writer = writer
        self.per_part = per_part
        self.to_table = to_table
        self._tops: list[TopK] = []
        self._count = 0
        self.users = 0

    def add(self, top: TopK) -> None:
        start = 0
        while start < len(top):
            take = min(len(top) - start, self.per_part - self._count)
            piece = (
                top
                if take == len(top)
                else TopK(*(a[start : start + take] for a in (top.users, top.items, top.scores)))
            )
            self._tops.append(piece)
            self._count += take
            start += take
            if self._count >= self.per_part:
                self.flush()

    def flush(self) -> None:
        if not self._tops:
            return
        merged = _concat(self._tops)
        order = np.argsort(merged.users, kind="stable")
        self.writer.write(self.to_table(TopK(merged.users[order], merged.items[order], merged.scores[order])))
        self.users += len(merged)
        self._tops, self._count = [], 0


# ------------------------------------------------------------------------------------------ Lightning
class _Batches(Dataset[np.ndarray]):
    """One item per batch: the history rows of that batch (already planned and sharded)."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.batches[i]


class TopKModule(L.LightningModule):
    """Thin Lightning wrapper: ``predict_step`` returns the :class:`TopK` of one planned batch of rows.

    Each rank takes every ``world_size``-th batch of the shared plan (batches are length-sorted, so the
    stride also balances the work), so no DistributedSampler is needed and no row is repeated.
    """

    def __init__(
        self,
        model: BERT4Rec,
        histories: Sequences,
        plan: list[np.ndarray],
        k: int,
        *,
        exclude_seen: bool,
        blocked: np.ndarray | None,
    ) -> None:
        super().__init__()
        self.model = model
        self.histories = histories
        self.plan = plan
        self.k = k
        self.exclude_seen = exclude_seen
        # A buffer, so that Lightning moves it to the device with the model (not saved: nothing is).
        self.blocked: torch.Tensor | None
        self.register_buffer(
            "blocked", None if blocked is None else torch.from_numpy(blocked), persistent=False
        )

    def predict_dataloader(self) -> DataLoader[np.ndarray]:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        # batch_size=None: each dataset item already is a batch; default_convert makes it a tensor.
        return DataLoader(_Batches(self.plan[rank::world]), batch_size=None, shuffle=False)

    def predict_step(self, batch: torch.Tensor, batch_idx: int) -> TopK:
        return topk_rows(
            self.model.predict_next,
            self.histories,
            batch.cpu().numpy(),
            self.k,
            max_history=self.model.max_len - 1,
            n_cols=self.model.vocab_size,
            blocked=self.blocked,
            exclude_seen=self.exclude_seen,
            device=self.device,
        )


class PartsWriter(L.Callback):
    """Every rank buffers its TopK batches into its own parts; rank 0 then writes the manifest and
    publishes the staging directory, after a barrier so that every rank's parts are on disk."""

    def __init__(
        self, staging: Path, out: Path, per_part: int, to_table: _Table, manifest: dict[str, Any]
    ) -> None:
        super().__init__()
        self.staging = staging
        self.out = out
        self.per_part = per_part
        self.to_table = to_table
        self.manifest = manifest
        self._buffer: _PartBuffer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # With the ``ddp`` launcher every rank ran the job and made its own staging directory: use rank 0's.
        shared = Path(trainer.strategy.broadcast(str(self.staging), src=0))
        if shared != self.staging:
            discard(self.staging)
            self.staging = shared
        self._buffer = _PartBuffer(
            PartWriter(self.staging, rank=trainer.global_rank), self.per_part, self.to_table
        )

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        assert self._buffer is not None
        self._buffer.add(outputs)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self._buffer is not None
        self._buffer.flush()
        trainer.strategy.barrier("recommend-parts-written")
        if trainer.is_global_zero:
            write_manifest(self.staging, {**self.manifest, "world_size": trainer.world_size})
            publish(self.staging, self.out)
        trainer.strategy.barrier("recommend-published")


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's start-up banner (accelerators found, tips) and its num_workers advice: a batch
    job's output is its summary; the data is already in memory, so workers would only add copies."""
    logger = logging.getLogger("pytorch_lightning")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            # torch deprecates the LeafSpec class that this Lightning version still checks for.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _predict(cfg: RecsysConfig, module: TopKModule, callback: PartsWriter) -> None:
    """Lightning's predict loop with the ``train`` section's accelerator, devices and strategy."""
    t = cfg.train
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            strategy=t.strategy,
            num_nodes=t.num_nodes,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=t.progress_bar,
            use_distributed_sampler=False,  # the module shards the batch plan by rank itself
            callbacks=[callback],
        )
        trainer.predict(module, return_predictions=False)


def _plan(lengths: np.ndarray, per_part: int, batch_size: int, max_width: int) -> list[np.ndarray]:
    """Batches, length-sorted within each part-sized chunk of rows, so that a single process writes each
    part from one contiguous range of rows (users come out in input order)."""
    plan: list[np.ndarray] = []
    for lo in range(0, len(lengths), per_part):
        chunk = plan_batches(lengths[lo : lo + per_part], batch_size, max_width=max_width)
        plan.extend(rows + lo for rows in chunk)
    return plan


def write_recommendations(
    model: BERT4Rec,
    histories: Sequences,
    row_ids: pl.Series,
    item_ids: pl.Series,
    out: Path,
    *,
    cfg: RecsysConfig,
    k: int,
    exclude_seen: bool = True,
    blocked: np.ndarray | None = None,
    manifest: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every history row and publish ``user_id, item_id, score, rank`` parquet parts at ``out``.

    Runs Lightning's predict loop on ``cfg.train.devices`` processes (one by default); the output is
    written into a staging directory and published only when complete.

    Args:
        histories: users 0..n-1 (row numbers), chronological item indices.
        row_ids: original user id of every row; item_ids: the original item ids in index order.
        cfg: ``inference.batch_size`` / ``rows_per_part``, ``train`` device settings and progress bar.
        blocked: Bool[V] items never recommended (:func:`blocked_items`).
        manifest: extra manifest entries (kind, model, fingerprint, ...).

    Returns:
        The published manifest.
    """
    per_part = max(1, cfg.inference.rows_per_part // k)
    plan = _plan(histories.lengths(), per_part, cfg.inference.batch_size, model.max_len - 1)
    to_table = _Table(row_ids, item_ids, USER_ID, ITEM_ID)
    entries = {
        "kind": "recommendations",
        **(manifest or {}),
        "k": k,
        "users": len(histories),
        "rows_per_part": cfg.inference.rows_per_part,
        "columns": [USER_ID, ITEM_ID, SCORE, RANK],
    }
    staging = create_staging(out)
    try:
        module = TopKModule(model, histories, plan, k, exclude_seen=exclude_seen, blocked=blocked)
        _predict(cfg, module, PartsWriter(staging, out, per_part, to_table, entries))
    except BaseException:
        discard(staging)
        raise
    return read_manifest(out)


# ------------------------------------------------------------------------------------------ inputs
@dataclass
class _Inputs:
    histories: Sequences  # users 0..n-1 (row numbers)
    row_ids: pl.Series  # original user id per row
    dataset: PreparedDataset | None
    from_dataset: int = 0
    from_file: int = 0
    unknown_users: int = 0
    unknown_items: int = 0
    sources: dict[str, str] = field(default_factory=dict)


def _same_dtype(a: pl.Series, b: pl.Series) -> tuple[pl.Series, pl.Series]:
    """Give two id columns one type: b cast to a's when every value casts, else both as strings."""
    if a.dtype == b.dtype:
        return a, b
    cast = b.cast(a.dtype, strict=False)
    if cast.null_count() == b.null_count():
        return a, cast
    return a.cast(pl.String), b.cast(pl.String)


def _concat_sequences(a: Sequences, b: Sequences) -> Sequences:
    """Rows of ``a`` then rows of ``b``, renumbered 0..n-1."""
    if not len(b):
        return a
    offsets = np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]])
    items = np.concatenate([a.items, b.items]).astype(np.int32)
    return Sequences(np.arange(len(a) + len(b), dtype=np.int64), offsets, items)


def _gather_inputs(cfg: RecsysConfig, bundle: Bundle, users: str | Path, histories: Path | None) -> _Inputs:
    """Resolve which users to score and from which histories; all input errors are raised here, before
    anything is written.

    Users given in ``--histories`` are scored from that history only. With a users file, only the listed
    users are scored (from ``--histories`` when they are there, else from the dataset); with ``all``,
    every dataset user and every ``--histories`` user is.
    """
    policy = cfg.data.unknown_ids
    sources = {"users": str(users), **({"histories": str(histories)} if histories else {})}
    file_seq, file_ids, unknown_items = Sequences.empty(), pl.Series(USER_ID, []), 0
    if histories is not None:
        frame = read_histories_file(histories)
        file_seq, ids, unknown_items = histories_from_frame(frame, bundle, unknown=policy, source=histories)
        file_ids = pl.Series(USER_ID, ids)

    listed = None if str(users) == "all" else read_id_file(users, USER_ID).unique(maintain_order=True)
    if listed is not None and len(file_ids):
        listed_as_file = listed.cast(file_ids.dtype, strict=False)
        keep = file_ids.is_in(listed_as_file).to_numpy()
        file_seq, file_ids = select_rows(file_seq, np.flatnonzero(keep)), file_ids.filter(pl.Series(keep))
        listed = listed.filter(~listed_as_file.is_in(file_ids).fill_null(False))

    dataset: PreparedDataset | None = None
    known_seq, known_ids, unknown_users = Sequences.empty(), pl.Series(USER_ID, []), 0
    if listed is None or len(listed):
        dataset = PreparedDataset.load(cfg.data.output_dir)
        check_compatible(bundle, dataset)
        full = dataset.all_events()
        if listed is None:
            rows = np.arange(dataset.n_users, dtype=np.int64)
            if len(file_ids):
                replaced = dataset.users.ids.is_in(file_ids.cast(dataset.users.ids.dtype, strict=False))
                rows = rows[~replaced.fill_null(False).to_numpy()]
        else:
            index = encode_known(dataset.users, listed)
            unknown_users = int((index < 0).sum())
            if unknown_users and policy == "error":
                examples = listed.filter(pl.Series(index < 0)).head(5).to_list()
                raise UnknownIdError(
                    f"{unknown_users} user id(s) not in the prepared dataset {dataset.path}, e.g. {examples}",
                    path=users,
                    column=USER_ID,
                    expected="users of the dataset or of --histories (or data.unknown_ids: drop)",
                )
            rows = index[index >= 0]
        # Every user, in order: the dataset's CSR already is that, no copy needed.
        known_seq = full if len(rows) == len(full) else select_rows(full, rows)
        known_ids = dataset.users.ids.gather(rows).rename(USER_ID)

    known_ids, file_ids = _same_dtype(known_ids, file_ids)
    return _Inputs(
        histories=_concat_sequences(known_seq, file_seq),
        row_ids=pl.concat([known_ids, file_ids.rename(USER_ID)]),
        dataset=dataset,
        from_dataset=len(known_seq),
        from_file=len(file_seq),
        unknown_users=unknown_users,
        unknown_items=unknown_items,
        sources=sources,
    )


def _item_list(bundle: Bundle, path: Path | None, policy: str) -> tuple[np.ndarray | None, int]:
    if path is None:
        return None, 0
    ids = read_id_file(path, ITEM_ID)
    index = encode_known(bundle.items, ids)
    unknown = int((index < 0).sum())
    if unknown and policy == "error":
        examples = ids.filter(pl.Series(index < 0)).head(5).to_list()
        raise UnknownIdError(
            f"{unknown} item id(s) not known to the model, e.g. {examples}",
            path=path,
            column=ITEM_ID,
            expected="items of the model's vocabulary (or data.unknown_ids: drop)",
        )
    return index[index >= 0], unknown


# ------------------------------------------------------------------------------------------ results
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


def _log(tracker: Tracker, prefix: str, values: dict[str, Any], manifest: dict[str, Any]) -> None:
    tracker.log_metrics({f"{prefix}.{k}": v for k, v in values.items() if isinstance(v, int | float)})
    tracker.log_dict(manifest, "manifest.json")


# ------------------------------------------------------------------------------------------ jobs
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
            the prepared dataset and ``unknown_ids``; ``train``: accelerator, devices, strategy).
        model: bundle directory or ``models:/name/version``.
        users: ``"all"`` (every dataset user, plus every --histories user) or a file of user ids.
        k: items per user (default ``cfg.inference.k``).
        out: output directory (replaced atomically if it holds a previous output).
        histories: parquet/CSV of ``user_id, item_id[, timestamp]`` rows: these users are scored from
            these histories (new users, or replacing a known user's history).
        allow: file of item ids that may be recommended; deny: file of item ids that may not.
        include_seen: also recommend items already in the history.
    """
    begun = time.perf_counter()
    k = cfg.inference.k if k is None else k
    _check_k(k)
    out = Path(out)
    check_target(out)
    bundle = load_model(model, cfg)
    policy = cfg.data.unknown_ids
    inputs = _gather_inputs(cfg, bundle, users, Path(histories) if histories is not None else None)
    allow_idx, unknown_allow = _item_list(bundle, Path(allow) if allow else None, policy)
    deny_idx, unknown_deny = _item_list(bundle, Path(deny) if deny else None, policy)
    blocked = blocked_items(bundle.n_items, allow=allow_idx, deny=deny_idx)
    exclude_seen = cfg.inference.exclude_seen and not include_seen
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

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
        _log(tracker, "recommend", result.to_json(), written)
        return result


def run_similar_items(
    cfg: RecsysConfig, *, model: str | Path, k: int | None = None, out: str | Path
) -> SimilarItemsResult:
    """The ``k`` nearest items of every item by output-embedding cosine, into ``out`` (atomic parquet:
    ``item_id, similar_item_id, score, rank``)."""
    k = cfg.inference.k if k is None else k
    _check_k(k)
    out = Path(out)
    check_target(out)
    bundle = load_model(model, cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    per_part = max(1, cfg.inference.rows_per_part // k)
    item_ids = bundle.items.ids
    # Query rows are item indices 1..n_items; index 0 of row_ids is a placeholder so that gather works.
    to_table = _Table(pl.concat([item_ids.head(1), item_ids]), item_ids, ITEM_ID, SIMILAR_ITEM_ID)
    manifest = {
        "kind": "similar_items",
        "model": {"path": str(bundle.path), "manifest_sha256": bundle_sha256(bundle)},
        "data_fingerprint": bundle.fingerprint,
        "k": k,
        "items": bundle.n_items,
        "similarity": "cosine of output item embeddings",
        "rows_per_part": cfg.inference.rows_per_part,
        "columns": [ITEM_ID, SIMILAR_ITEM_ID, SCORE, RANK],
    }
    with tracked_run(cfg, "similar-items", dataset=dataset_name(cfg)) as tracker:
        tracker.set_tags({"model": str(model)})
        staging = create_staging(out)
        started = time.perf_counter()
        try:
            buffer = _PartBuffer(PartWriter(staging), per_part, to_table)
            blocks: Iterable[TopK] = similar_items(
                bundle.model, k, batch_size=cfg.inference.batch_size, device=resolve_device(cfg)
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
        _log(tracker, "similar_items", result.to_json(), written)
        return result
