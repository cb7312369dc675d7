"""Adapters that make a trained model look like the evaluation ``Scorer`` protocol."""

from __future__ import annotations

import torch

from recsys.model.bert4rec import BERT4Rec

__all__ = ["ModelScorer"]


class ModelScorer:
    """Scores the next item after a left-padded history with a [MASK] appended (inference mode)."""

    def __init__(self, model: BERT4Rec, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.max_history = model.max_len - 1

    @torch.no_grad()
    def scores(self, history: torch.Tensor) -> torch.Tensor:
        """``history: Long[B, L]`` → ``Float[B, V]`` (a new tensor; callers mask it in place)."""
        return self.model.predict_next(history[:, -self.max_history :].to(self.device)).float()
