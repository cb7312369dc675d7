"""Which MLflow run a checkpoint belongs to, so that ``recsys train --resume`` continues that run.

The train job adds :class:`RunRecord` to ``fit``'s callbacks: every checkpoint then carries the id of the
run that wrote it, and :func:`recorded_run_id` reads it back before the resumed run opens. Kept inside
the checkpoint rather than in a file beside it, so the id always matches the checkpoint it came with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as L

from recsys.training.resume import checkpoint_callback_state

__all__ = ["RunRecord", "recorded_run_id"]


class RunRecord(L.Callback):
    """Stores the MLflow run id in every checkpoint (state only; it does nothing during training)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the resumed run's own id is recorded from now on."""


def recorded_run_id(checkpoint: Path) -> str | None:
    """The MLflow run id stored in ``checkpoint`` by :class:`RunRecord`, or None (untracked, or older)."""
    if not checkpoint.is_file():
        return None
    state = checkpoint_callback_state(checkpoint, RunRecord.__qualname__)
    run_id = state.get("run_id") if state else None
    return str(run_id) if run_id else None
