"""The model sections of the config: the encoder (with the BERT-family options) and the masking."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from recsys.config.base import Section as _Section

__all__ = ["ElectraConfig", "MaskingConfig", "ModelConfig"]


# ---------------------------------------------------------------------------------------------- model
class ElectraConfig(_Section):
    enabled: bool = Field(
        False,
        description=(
            "ELECTRA: a small generator (sharing the item table) proposes items at the masked positions; "
            "the encoder also learns to tell real from replaced items at every position. An epoch "
            "costs about 3.6x (amazon-toys, one AMD EPYC core)."
        ),
    )
    generator_hidden: int = Field(32, ge=2, description="Width of the generator's encoder.")
    generator_layers: int = Field(1, ge=1, description="Encoder blocks of the generator.")
    weight: float = Field(
        1.0, gt=0.0, description="Weight of the replaced-item detection loss next to the masked-item loss."
    )


class ModelConfig(_Section):
    hidden_size: int = Field(64, ge=8, description="Embedding and Transformer width.")
    n_layers: int = Field(2, ge=1, description="Number of Transformer encoder blocks.")
    n_heads: int = Field(2, ge=1, description="Attention heads per block.")
    ff_multiplier: int = Field(4, ge=1, description="Feed-forward width as a multiple of hidden_size.")
    max_len: Annotated[int, Field(ge=2)] | Literal["auto"] = Field(
        "auto",
        description=(
            "Longest input sequence (including an appended [MASK]). auto: from the training history "
            "lengths, the length that holds max_len_quantile of the users' whole histories plus the "
            "[MASK], rounded up to a multiple of 8, clipped to [16, 200]; the value used is logged."
        ),
    )
    max_len_quantile: float = Field(
        0.95, gt=0.0, le=1.0, description="max_len auto: share of users whose whole history fits."
    )
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | Literal["auto"] = Field(
        "auto",
        description=(
            "Dropout on embeddings and sub-layers. auto: from the training events per item, 0.1 for "
            "logs with at least 50 per item (ML-1M: 289), 0.3 for sparser ones (the Amazon sets: 9-11), "
            "where the item rows overfit first; the value used is logged."
        ),
    )
    attention_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | Literal["auto"] = Field(
        "auto", description="Dropout on attention weights. auto: what dropout resolves to."
    )
    norm_first: bool = Field(False, description="Pre-norm blocks (true) or post-norm as in BERT (false).")
    tied_output: bool = Field(True, description="Score items with the input item embedding (tied).")
    item_bias: bool = Field(True, description="Add a learned per-item bias to output scores.")
    embedding_size: int | None = Field(
        None,
        ge=2,
        description=(
            "ALBERT: item embeddings of this width, projected up to hidden_size on input and scored in "
            "this width on output (V x e + e x d parameters instead of V x d); null: hidden_size."
        ),
    )
    share_layers: bool = Field(
        False, description="ALBERT: one encoder block's weights used by all n_layers (cross-layer sharing)."
    )
    relative_attention: bool = Field(
        True,
        description=(
            "DeBERTa: add disentangled relative-position terms to every attention score "
            "(content-to-position and position-to-content, from a shared table of relative distances). "
            "On by default: at a 60-minute budget it won on validation on ML-1M and amazon-toys and was "
            "level on amazon-games (README, Benchmarks); an epoch costs up to 1.6x (ML-1M, 200 items)."
        ),
    )
    relative_distance: int = Field(
        16, ge=1, description="DeBERTa: relative distances beyond +-this share one embedding."
    )
    electra: ElectraConfig = Field(
        default_factory=ElectraConfig, description="ELECTRA's replaced-item detection objective."
    )
    drop_path: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description=(
            "Stochastic depth: in training each sequence skips the last block with this probability "
            "(block l of n: l/n of it), the kept ones rescaled; 0 disables."
        ),
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.hidden_size % self.n_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.electra.enabled and self.electra.generator_hidden % self.n_heads:
            raise ValueError(
                f"electra.generator_hidden ({self.electra.generator_hidden}) must be divisible by "
                f"n_heads ({self.n_heads})"
            )
        return self

    def resolved_max_len(self) -> int:
        """``max_len`` as a number; an ``auto`` still unresolved (see ``recsys.training.auto``) is an
        error, since only a dataset can say what it is."""
        if self.max_len == "auto":
            raise ValueError("model.max_len is 'auto': resolve it against the dataset first")
        return self.max_len

    def resolved_dropout(self) -> tuple[float, float]:
        """``(dropout, attention_dropout)`` as numbers; an unresolved ``auto`` is an error."""
        if self.dropout == "auto" or self.attention_dropout == "auto":
            raise ValueError("model.dropout is 'auto': resolve it against the dataset first")
        return self.dropout, self.attention_dropout


class MaskingConfig(_Section):
    mask_prob: Annotated[float, Field(gt=0.0, le=1.0)] | Literal["auto"] = Field(
        "auto",
        description=(
            "Probability that an item is masked. auto: from the training events per item, 0.3 for logs "
            "with at least 50 per item (ML-1M: 289), 0.5 for sparser ones (the Amazon sets: 9-11), whose "
            "short histories give few targets per pass; the value used is logged."
        ),
    )
    replace_mask: float = Field(0.8, ge=0.0, le=1.0, description="Share of masked items shown as [MASK].")
    replace_random: float = Field(
        0.1, ge=0.0, le=1.0, description="Share shown as a random item (the rest keep the original)."
    )
    last_item_prob: float = Field(
        0.2, ge=0.0, le=1.0, description="Probability a sequence has only its last item masked."
    )
    window: Literal["recent", "sliding"] = Field(
        "sliding", description="Histories over max_len: most recent window, or sliding windows."
    )
    stride: int | None = Field(None, ge=1, description="Sliding-window stride; null means max_len.")

    def resolved_mask_prob(self) -> float:
        """``mask_prob`` as a number; an unresolved ``auto`` (see ``recsys.training.auto``) is an error."""
        if self.mask_prob == "auto":
            raise ValueError("masking.mask_prob is 'auto': resolve it against the dataset first")
        return self.mask_prob

    @model_validator(mode="after")
    def _shares(self) -> MaskingConfig:
        if self.replace_mask + self.replace_random > 1.0 + 1e-9:
            raise ValueError("replace_mask + replace_random must be <= 1")
        return self
