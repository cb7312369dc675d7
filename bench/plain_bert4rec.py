"""A plain BERT4Rec, written the way most implementations are: the reference of the ML-1M benchmark.

``nn.TransformerEncoder`` (post-norm, GELU, dropout as configured), BERT4Rec's output transform, tied
item embedding, and logits for EVERY position against the whole vocabulary (``[B, L, V]``), with the
cross-entropy taken on the masked ones: RecBole's, BERT4Rec-pytorch's and RecTools' transformer models
score like this. Trained by a plain loop (AdamW, gradient clipping at 1.0) on the same batches and masks
as the project's model, so the two differ only in how the model computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PlainBERT4Rec(nn.Module):
    """BERT4Rec from stock PyTorch modules; ``forward(items: [B, L]) -> logits [B, L, V]``."""

    def __init__(
        self, n_items: int, d: int, n_layers: int, n_heads: int, max_len: int, dropout: float
    ) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 2, d, padding_idx=0)  # PAD, items, MASK
        self.position = nn.Embedding(max_len, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d, n_heads, 4 * d, dropout, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, d)
        self.head_norm = nn.LayerNorm(d)
        self.bias = nn.Parameter(torch.zeros(n_items + 2))

    def forward(self, items: Tensor) -> Tensor:
        x = self.norm(self.item(items) + self.position.weight[-items.shape[1] :])  # [B, L, d]
        x = self.encoder(self.dropout(x), src_key_padding_mask=items == 0)
        h = self.head_norm(F.gelu(self.head(x)))
        return h @ self.item.weight.T + self.bias  # [B, L, V]


def plain_step(
    model: PlainBERT4Rec, optimizer: torch.optim.Optimizer, inputs: Tensor, labels: Tensor
) -> float:
    """One training step: cross-entropy on the masked positions (``labels > 0``) of all-position logits."""
    logits = model(inputs)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=0)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss)
