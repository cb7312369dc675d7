"""The prepared dataset directory: layout, manifest, fingerprint, atomic write, reuse and loading.

Layout (``FORMAT_VERSION`` 1)::

    <output_dir>/
      manifest.json          format version, resolved data config, input fingerprint, counts, file sizes
      interactions.parquet   user (Int32), item (Int32), timestamp, row (UInt32), split (Int8),
                             sorted by (user, timestamp, row); split: 0 train, 1 validation, 2 test
      users.parquet          index (Int32, 0..n_users-1), id (original user id)
      items.parquet          index (Int32, 1..n_items), id (original item id)
      report.json, report.txt, seq_length_hist.png   the data report

The manifest is written last, so a directory without one is incomplete; the whole directory is written
beside the target and renamed into place (:func:`recsys.io.atomic_dir`: pid-owned names, so a killed
run's leftovers are removed by the next one).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypedDict, cast, get_args

import numpy as np
import polars as pl

import recsys
from recsys.config import DataConfig
from recsys.data.columns import ITEM, SPLIT, SPLIT_CODES, TEST, TRAIN, USER, SplitName
from recsys.data.errors import PreparedDatasetError
from recsys.data.fingerprint import Fingerprint, fingerprint
from recsys.data.report import DataReport, format_table, plot_lengths
from recsys.data.sequences import Sequences
from recsys.data.vocab import Vocabulary
from recsys.io import atomic_dir, sha256_json, writing

if TYPE_CHECKING:
    from recsys.data.pipeline import Built

__all__ = [
    "FORMAT_VERSION",
    "Counts",
    "PreparedDataset",
    "PreparedManifest",
    "check_target",
    "config_key",
    "find_reusable",
    "make_manifest",
    "write_prepared",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INTERACTIONS = "interactions.parquet"
USERS = "users.parquet"
ITEMS = "items.parquet"
REPORT_JSON = "report.json"
REPORT_TXT = "report.txt"
HISTOGRAM = "seq_length_hist.png"
# lz4 writes almost as fast as no compression and halves the files; zstd costs ~2x the write time.
_COMPRESSION: Final = "lz4"


class Counts(TypedDict):
    input_rows: int
    users: int
    items: int
    interactions: int
    train: int
    validation: int
    test: int


class PreparedManifest(TypedDict):
    """``manifest.json`` of a prepared dataset (see the module docstring)."""

    format_version: int
    recsys_version: str
    created_at: str
    config: dict[str, Any]  # the resolved DataConfig
    config_key: str  # :func:`config_key`
    source: dict[str, Any]  # SourceInfo.to_json() plus its Fingerprint as "fingerprint"
    counts: Counts
    split: dict[str, Any]  # SplitSummary.to_json()
    vocabulary_order: str
    files: dict[str, int]  # file name -> bytes


# ------------------------------------------------------------------------------------------ fingerprint
def config_key(cfg: DataConfig) -> str:
    """Hash of the settings that change the prepared data (not the paths, not inference options)."""
    relevant = cfg.model_dump(mode="json", exclude={"output_dir": True, "unknown_ids": True})
    relevant["source"].pop("path", None)
    return sha256_json({"format_version": FORMAT_VERSION, "config": relevant})


# ------------------------------------------------------------------------------------------ manifest
def make_manifest(cfg: DataConfig, built: Built, source_fp: Fingerprint) -> PreparedManifest:
    """The manifest of a freshly built dataset (``files`` is filled in when written)."""
    split = built.split
    return {
        "format_version": FORMAT_VERSION,
        "recsys_version": recsys.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.model_dump(mode="json"),
        "config_key": config_key(cfg),
        "source": {**built.source.to_json(), "fingerprint": source_fp.to_json()},
        "counts": {
            "input_rows": built.input_rows,
            "users": len(built.users),
            "items": len(built.items),
            "interactions": built.interactions.height,
            "train": split.train_rows,
            "validation": split.validation_rows,
            "test": split.test_rows,
        },
        "split": split.to_json(),
        "vocabulary_order": "sorted original id",
        "files": {},
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PreparedDatasetError(f"cannot read {path.name} ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise PreparedDatasetError(f"{path.name} is not a JSON object", path=path)
    return data


def _check_files(directory: Path, manifest: dict[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise PreparedDatasetError("manifest lists no files", path=directory / MANIFEST, column="files")
    for name, size in files.items():
        file = directory / name
        if not file.is_file():
            raise PreparedDatasetError(
                f"{name} is missing", path=directory, expected="every file in the manifest"
            )
        if file.stat().st_size != size:
            raise PreparedDatasetError(
                f"{name} has {file.stat().st_size} bytes, the manifest says {size}",
                path=file,
                expected="the file as written (the directory was modified or is corrupt)",
            )


def read_manifest(directory: Path) -> PreparedManifest:
    """Read and check the manifest of a prepared directory (version and files)."""
    if not directory.is_dir():
        raise PreparedDatasetError(
            "prepared dataset directory not found",
            path=directory,
            expected="a directory written by `recsys prepare`",
        )
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise PreparedDatasetError(
            f"no {MANIFEST}: not a prepared dataset, or its write was interrupted",
            path=directory,
            expected="a directory written by `recsys prepare` (run it again)",
        )
    manifest = _read_json(manifest_path)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise PreparedDatasetError(
            f"format_version {version!r}",
            path=manifest_path,
            expected=f"format_version {FORMAT_VERSION} (prepare the dataset again)",
        )
    missing = sorted(set(PreparedManifest.__annotations__) - set(manifest))
    if missing:
        raise PreparedDatasetError(
            f"{MANIFEST} lacks {', '.join(missing)}", path=manifest_path, expected="prepare the dataset again"
        )
    _check_files(directory, manifest)
    return cast(PreparedManifest, manifest)  # every key there, version and files checked


# ------------------------------------------------------------------------------------------ reuse/write
def check_target(target: Path) -> None:
    """Refuse to replace something that is not a prepared dataset (a file, or a foreign directory)."""
    if target.exists() and not target.is_dir():
        raise PreparedDatasetError("output_dir exists and is not a directory", path=target)
    if target.is_dir() and not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise PreparedDatasetError(
            "output_dir is a non-empty directory that is not a prepared dataset; refusing to replace it",
            path=target,
            expected="a new or prepared-dataset directory",
        )


def find_reusable(
    target: Path, cfg: DataConfig, quick: Fingerprint
) -> tuple[PreparedManifest, DataReport] | None:
    """(manifest, report) of ``target`` if it was prepared from the same input with the same config.

    Same input: same size and mtime (no hashing needed), or same size and same SHA-256.
    """
    try:
        manifest = read_manifest(target)
        report = cast(DataReport, _read_json(target / REPORT_JSON))
    except PreparedDatasetError:
        return None
    if manifest.get("config_key") != config_key(cfg):
        return None
    old = manifest["source"].get("fingerprint", {})
    if old.get("size") != quick.size:
        return None
    same_file = old.get("mtime_ns") == quick.mtime_ns
    if not same_file and fingerprint(cfg.source.path, with_hash=True).sha256 != old.get("sha256"):
        return None
    return manifest, report


def _write_files(
    directory: Path, target: Path, built: Built, manifest: PreparedManifest, report: DataReport, plot: bool
) -> None:
    """Every file of the dataset into ``directory``; a failed write names the file under ``target``."""
    writers: list[tuple[str, Callable[[Path], object]]] = [
        (INTERACTIONS, lambda path: built.interactions.write_parquet(path, compression=_COMPRESSION)),
        (USERS, built.users.save),
        (ITEMS, built.items.save),
        (REPORT_JSON, lambda path: path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")),
        (REPORT_TXT, lambda path: path.write_text(format_table(report) + "\n", encoding="utf-8")),
    ]
    if plot:
        writers.append((HISTOGRAM, lambda path: plot_lengths(built.user_lengths(), path)))
    for name, write in writers:
        with writing(target / name):
            write(directory / name)
    manifest["files"] = {p.name: p.stat().st_size for p in sorted(directory.iterdir())}
    # Last: a directory with a manifest is complete.
    with writing(target / MANIFEST):
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def write_prepared(
    target: Path, built: Built, manifest: PreparedManifest, report: DataReport, *, plot: bool = True
) -> None:
    """Write the dataset into a staging directory beside ``target`` and publish it there atomically
    (:func:`recsys.io.atomic_dir`: ``target`` is always the old complete dataset or the new one; a killed
    run's staging is cleared by the next one). A full disk or an unwritable folder is an
    :class:`~recsys.data.errors.OutputWriteError` naming the file.
    """
    check_target(target)
    with writing(target), atomic_dir(target) as staging:
        _write_files(staging, target, built, manifest, report, plot)


# ------------------------------------------------------------------------------------------ loading
class PreparedDataset:
    """A prepared dataset directory, loaded (see the module docstring for the layout).

    Histories include **every** user (``len == n_users``), with an empty sequence for users who have no
    events in that history (e.g. users whose only events are validation/test targets); targets include
    only users who have a target.
    """

    def __init__(self, path: Path, manifest: PreparedManifest, users: Vocabulary, items: Vocabulary) -> None:
        self.path = path
        self.manifest = manifest
        self.users = users
        self.items = items
        self._columns: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._histories: dict[str, Sequences] = {}

    @classmethod
    def load(cls, path: str | Path) -> PreparedDataset:
        """Open a prepared directory; raise :class:`PreparedDatasetError` if missing or corrupt."""
        directory = Path(path)
        manifest = read_manifest(directory)
        users = Vocabulary.load(directory / USERS)
        items = Vocabulary.load(directory / ITEMS)
        counts = manifest["counts"]
        if counts.get("users") != len(users) or counts.get("items") != len(items):
            raise PreparedDatasetError(
                f"vocabularies have {len(users)} users / {len(items)} items, the manifest says "
                f"{counts.get('users')} / {counts.get('items')}",
                path=directory,
            )
        return cls(directory, manifest, users, items)

    @property
    def n_users(self) -> int:
        """Number of users (indices 0..n_users-1)."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Number of items (indices 1..n_items; 0 is PAD, n_items+1 is MASK)."""
        return len(self.items)

    @property
    def report(self) -> DataReport:
        """The data report (``report.json``)."""
        return cast(DataReport, _read_json(self.path / REPORT_JSON))

    def interactions(self) -> pl.LazyFrame:
        """Every encoded interaction: user, item, timestamp, row (original data row), split."""
        return pl.scan_parquet(self.path / INTERACTIONS)

    def _load_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._columns is None:
            try:
                frame = pl.read_parquet(self.path / INTERACTIONS, columns=[USER, ITEM, SPLIT])
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise PreparedDatasetError(f"cannot read {INTERACTIONS} ({exc})", path=self.path) from None
            self._columns = (frame[USER].to_numpy(), frame[ITEM].to_numpy(), frame[SPLIT].to_numpy())
        return self._columns

    def history(self, split: SplitName) -> Sequences:
        """Model input for ``split``: train and validation -> training events; test -> train + validation.

        Never contains an event that is a target of ``split`` (or of a later split).
        """
        _check_split(split, get_args(SplitName))
        key = "test" if split == "test" else "train"
        if key not in self._histories:
            users, items, tags = self._load_columns()
            mask = tags == TRAIN if key == "train" else tags != TEST
            history = Sequences.from_sorted(users[mask], items[mask], n_users=self.n_users)
            # Cached and shared between callers: make it read-only so that nobody edits it in place.
            for array in (history.users, history.offsets, history.items):
                array.setflags(write=False)
            self._histories[key] = history
        return self._histories[key]

    def training_events(self, held_out_users: np.ndarray | None = None) -> Sequences:
        """Events a model may train on, for every user (empty sequences included).

        ``None``: the training events (``history("train")``), every validation event held out. Given
        an array of user indices: the training events plus the validation events of every user *not*
        in it, so that only those users' validation events stay unseen (validation on a user sample).
        Test events are never included.
        """
        if held_out_users is None:
            return self.history("train")
        users, items, tags = self._load_columns()
        mask = (tags == TRAIN) | ((tags == SPLIT_CODES["validation"]) & ~np.isin(users, held_out_users))
        return Sequences.from_sorted(users[mask], items[mask], n_users=self.n_users)

    def targets(self, split: SplitName) -> Sequences:
        """The events to predict for ``split`` (validation or test); users without a target are absent."""
        _check_split(split, ("validation", "test"))
        users, items, tags = self._load_columns()
        mask = tags == SPLIT_CODES[split]
        return Sequences.from_sorted(users[mask], items[mask])

    def all_events(self) -> Sequences:
        """Every event of every user (train + validation + test), in time order.

        What production recommendations score known users from (``recsys recommend``, the pyfunc model).
        """
        users, items, _ = self._load_columns()
        return Sequences.from_sorted(users, items, n_users=self.n_users)

    def item_counts(self) -> np.ndarray:
        """int64[n_items + 2]: training interactions per item index; PAD (0) and MASK (n_items+1) are 0."""
        _, items, tags = self._load_columns()
        return np.bincount(items[tags == TRAIN], minlength=self.n_items + 2).astype(np.int64)

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.path)!r}, users={self.n_users}, items={self.n_items})"


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"split must be one of {allowed}, got {split!r}")
