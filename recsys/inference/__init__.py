"""Inference: the one ranking path (:mod:`recsys.inference.topk`) and :class:`Recommender` over it.

``from recsys.inference import Recommender`` loads it on first use, so that importing a submodule
(``recsys.inference.topk`` for validation) does not import the bundle and data layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.inference.recommender import Recommender

__all__ = ["Recommender"]


def __getattr__(name: str) -> Any:
    if name == "Recommender":
        from recsys.inference.recommender import Recommender

        return Recommender
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
