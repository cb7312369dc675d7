"""Pure-torch BERT4Rec: the encoder, the masking function and the training losses (no Lightning, no I/O)."""

from recsys.model.bert4rec import PAD, BERT4Rec, TransformerBlock
from recsys.model.losses import (
    GBCE,
    FullSoftmax,
    RecLoss,
    SampledSoftmax,
    build_loss,
    gbce_beta,
    resolve_loss,
)
from recsys.model.masking import mask_items, windows

__all__ = [
    "GBCE",
    "PAD",
    "BERT4Rec",
    "FullSoftmax",
    "RecLoss",
    "SampledSoftmax",
    "TransformerBlock",
    "build_loss",
    "gbce_beta",
    "mask_items",
    "resolve_loss",
    "windows",
]
