"""Load a model bundle from a directory or from the MLflow model registry."""

from __future__ import annotations

from pathlib import Path

from recsys.config import TrackingConfig
from recsys.training.bundle import Bundle, load_bundle

__all__ = ["load_model"]


def load_model(model: str | Path, tracking: TrackingConfig) -> Bundle:
    """Load a bundle from a directory or a ``models:/name/version`` registry URI (looked up in the
    tracking store of ``tracking``)."""
    if isinstance(model, str) and model.startswith("models:/"):
        # Imported only for registry URIs: it downloads through MLflow, which a plain directory never needs.
        from recsys.tracking.registry import resolve_model_uri
        from recsys.tracking.store import resolve_tracking_uri

        return load_bundle(resolve_model_uri(model, tracking_uri=resolve_tracking_uri(tracking)))
    return load_bundle(Path(model))
