"""Identity of data: an input file's fingerprint, and a prepared dataset's (what a model bundle records
and ``recsys evaluate`` / ``recommend`` check a dataset against)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.io import sha256_file, sha256_json

if TYPE_CHECKING:
    from recsys.data.prepared import PreparedDataset

__all__ = ["Fingerprint", "dataset_fingerprint", "fingerprint"]


@dataclass(frozen=True)
class Fingerprint:
    """Identity of an input file: size, modification time and (optionally) SHA-256 of its bytes."""

    size: int
    mtime_ns: int
    sha256: str | None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def fingerprint(path: Path, *, with_hash: bool = True) -> Fingerprint:
    """Size and mtime of ``path``, plus the SHA-256 of its bytes when ``with_hash``."""
    stat = path.stat()
    digest = sha256_file(path) if with_hash else None
    return Fingerprint(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=digest)


def dataset_fingerprint(dataset: PreparedDataset) -> str:
    """Identity of the training data: the source file's fingerprint plus the data-config key."""
    manifest = dataset.manifest
    payload = {"source": manifest["source"].get("fingerprint"), "config": manifest["config_key"]}
    return sha256_json(payload)
