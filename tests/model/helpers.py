"""Shared builders for the encoder tests."""

from __future__ import annotations

from recsys.config import ModelConfig


def small_cfg(**overrides: object) -> ModelConfig:
    """A 16-wide, 2-block encoder config with explicit dropout (no dataset to resolve ``auto`` from)."""
    base: dict[str, object] = {
        "hidden_size": 16,
        "n_layers": 2,
        "n_heads": 2,
        "max_len": 8,
        "dropout": 0.1,
        "attention_dropout": 0.1,
    }
    return ModelConfig.model_validate({**base, **overrides})
