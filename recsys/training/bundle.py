"""The model bundle: everything needed to score users, and nothing that executes code on load.

Layout of a bundle directory::

    manifest.json          format version, sizes and SHA-256 of every other file, counts, fingerprint
    config.json            the resolved RecsysConfig
    weights.safetensors    model state dict
    stats.safetensors      training item counts (popularity; baselines, novelty, filters)
    users.parquet          user vocabulary
    items.parquet          item vocabulary

Weights are safetensors (no pickle). Every file is hashed in the manifest and checked on load, so a
tampered or truncated bundle is refused with the name of the offending file. Bundles are written into
a temporary sibling directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recsys import __version__
from recsys.config import RecsysConfig
from recsys.data.fingerprint import dataset_fingerprint
from recsys.data.prepared import PreparedDataset
from recsys.data.vocab import Vocabulary
from recsys.io import atomic_dir, sha256_file
from recsys.model.bert4rec import BERT4Rec, FeatureIndex

__all__ = [
    "BUNDLE_FORMAT",
    "Bundle",
    "BundleError",
    "BundleManifest",
    "bundle_sha256",
    "check_compatible",
    "load_bundle",
    "save_bundle",
]

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
_FILES = ("config.json", "weights.safetensors", "stats.safetensors", "users.parquet", "items.parquet")
_FEATURES = "features.parquet"
"""The side-feature vocabulary, in the bundle of a model trained with item features only."""


class BundleError(ValueError):
    """A model bundle that is missing, incomplete, tampered with or of an unknown format."""


class FileEntry(TypedDict):
    sha256: str
    bytes: int


class _BundleManifestBase(TypedDict):
    format: int
    recsys_version: str
    n_items: int
    n_users: int
    data_fingerprint: str
    files: dict[str, FileEntry]


class BundleManifest(_BundleManifestBase, total=False):
    """``manifest.json`` of a bundle; ``fit`` adds the best validation metrics and epoch,
    ``export_checkpoint`` the checkpoint it came from."""

    best_val: dict[str, float]
    best_epoch: int
    checkpoint: str
    item_features: dict[str, int]


@dataclass
class Bundle:
    """A loaded model bundle; ``model`` is in eval mode on the CPU."""

    path: Path
    model: BERT4Rec
    config: RecsysConfig
    users: Vocabulary
    items: Vocabulary
    item_counts: np.ndarray
    manifest: BundleManifest
    features: Vocabulary | None = None
    """The side-feature vocabulary (``features.parquet``) of a model trained with item features."""

    @property
    def n_items(self) -> int:
        return int(self.manifest["n_items"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("data_fingerprint", ""))


def save_bundle(
    path: str | Path,
    model: BERT4Rec,
    config: RecsysConfig,
    users: Vocabulary,
    items: Vocabulary,
    item_counts: np.ndarray,
    *,
    data_fingerprint: str = "",
    features: Vocabulary | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle atomically to ``path``, replacing a bundle there (:func:`recsys.io.atomic_dir`).

    A model with item side features needs their vocabulary (``features``), kept as ``features.parquet``.
    """
    if (features is None) != (model.n_features == 0) or (
        features is not None and len(features) != model.n_features
    ):
        raise ValueError(
            f"the model has {model.n_features} side features, the feature vocabulary passed "
            f"{'none' if features is None else len(features)}"
        )
    target = Path(path)
    with atomic_dir(target) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "weights.safetensors"))
        save_file(
            {"item_counts": torch.as_tensor(np.asarray(item_counts, dtype=np.int64))},
            str(tmp / "stats.safetensors"),
        )
        (tmp / "config.json").write_text(config.model_dump_json(indent=2), encoding="utf-8")
        users.save(tmp / "users.parquet")
        items.save(tmp / "items.parquet")
        names = list(_FILES)
        if features is not None:
            features.save(tmp / _FEATURES)
            names.append(_FEATURES)
        manifest: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "recsys_version": __version__,
            "n_items": int(model.n_items),
            "n_users": len(users),
            "data_fingerprint": data_fingerprint,
            "files": {
                name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
                for name in names
            },
            **({"item_features": model.feature_shapes()} if features is not None else {}),
            **(extra or {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return target


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle; raises :class:`BundleError` naming the problem and the file."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"model bundle not found: {root} (expected a directory written by `recsys train`)")
    manifest_path = root / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{manifest_path}: missing; {root} is not a recsys model bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc}); the bundle is damaged") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{manifest_path}: bundle format {manifest.get('format')!r}, expected {BUNDLE_FORMAT}"
        )
    files = manifest.get("files", {})
    shapes = manifest.get("item_features")
    for name in (*_FILES, _FEATURES) if shapes else _FILES:
        file = root / name
        if name not in files:
            raise BundleError(f"{manifest_path}: no checksum for {name}; the manifest is damaged")
        if not file.is_file():
            raise BundleError(f"{file}: missing from the bundle")
        size = file.stat().st_size
        if size != files[name]["bytes"]:
            raise BundleError(
                f"{file}: {size} bytes, manifest says {files[name]['bytes']} (truncated or altered)"
            )
        if sha256_file(file) != files[name]["sha256"]:
            raise BundleError(f"{file}: SHA-256 does not match the manifest (tampered or corrupted)")
    try:
        config = RecsysConfig.model_validate_json((root / "config.json").read_text(encoding="utf-8"))
        state = load_file(str(root / "weights.safetensors"))
        stats = load_file(str(root / "stats.safetensors"))
    except (SafetensorError, ValueError) as exc:
        raise BundleError(f"{root}: cannot read bundle contents: {exc}") from None
    n_items = int(manifest["n_items"])
    try:
        placeholder = (
            None if not shapes else FeatureIndex.placeholder(n_items + 2, shapes["nnz"], shapes["n_features"])
        )
        model = BERT4Rec(n_items, config.model, placeholder)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise BundleError(f"{root / 'weights.safetensors'}: weights do not fit the config: {exc}") from None
    model.eval()
    return Bundle(
        path=root,
        model=model,
        config=config,
        users=Vocabulary.load(root / "users.parquet"),
        items=Vocabulary.load(root / "items.parquet"),
        item_counts=stats["item_counts"].numpy(),
        manifest=manifest,  # checked above: format, every file's size and hash
        features=Vocabulary.load(root / _FEATURES) if shapes else None,
    )


def bundle_sha256(bundle: Bundle) -> str:
    """SHA-256 of the bundle's manifest (which holds the SHA-256 of every other bundle file)."""
    return hashlib.sha256((bundle.path / "manifest.json").read_bytes()).hexdigest()


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
