"""recsys: BERT4Rec sequential recommendation, from interaction log to top-k batch job."""

from importlib import metadata

try:
    __version__ = metadata.version("recsys")
except metadata.PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
    __version__ = "0+unknown"
