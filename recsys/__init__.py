"""recsys: BERT4Rec sequential recommendation, from interaction log to top-k batch job.

``from recsys import BERT4Rec`` is the notebook API (:mod:`recsys.api`); it is imported on first use, so
that ``import recsys`` (the CLI's start, ``recsys.__version__``) stays free of torch's import time.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.api import BERT4Rec

__all__ = ["BERT4Rec", "__version__"]

try:
    __version__ = metadata.version("recsys")
except metadata.PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "BERT4Rec":
        from recsys.api import BERT4Rec

        return BERT4Rec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
