"""BERT4Rec: a bidirectional Transformer over item sequences, scored only where it is needed.

Index conventions (docs/CONTRACTS.md): PAD = 0, real items 1..n_items, MASK = n_items + 1, so the vocabulary
has V = n_items + 2 rows. Inputs are LEFT-padded and position ids count back from the end, so the most
recent item always sits at position ``max_len - 1`` whatever the padded width of the batch.

Nothing here ever builds a ``[batch, seq_len, V]`` tensor: training scores the masked positions only
(:meth:`BERT4Rec.hidden_at` + a loss), inference the appended [MASK] only (:meth:`BERT4Rec.predict_next`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.config import ModelConfig

__all__ = ["PAD", "BERT4Rec", "TransformerBlock", "dropout"]

PAD = 0
"""Index of the padding item; never masked, never scored."""

_INIT_STD = 0.02  # BERT's initializer_range
_CHUNK_BYTES = 8 * 2**20  # target size of one materialised attention-weight block on CPU (see below)
_MIN_SOFTMAX_ROW = 16  # shortest softmax row PyTorch's CPU kernel vectorises (see _attention_chunk)
_PAD_SOFTMAX_FROM = 8  # shorter rows are left as they are: padding them costs more than it saves


def _keep_mask(shape: torch.Size, p: float, like: Tensor) -> tuple[Tensor, float]:
    """A 0/1 keep mask (dtype of ``like``) for dropout rate p, and the inverted-dropout scale.

    ``F.dropout`` on CPU draws one Mersenne-Twister float per element (``bernoulli_``) and applies it
    with ``where``-like kernels; at BERT4Rec's sizes that costs more than the attention GEMMs. Here each
    64-bit draw is split into four 16-bit uniforms and the mask is applied by a plain multiply, several
    times cheaper. p is rounded to a multiple of 1/65536 (under 1e-5 off) and the scale uses the rounded
    p, so dropout stays exactly unbiased. Seeded by the default generator, like ``F.dropout``.
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(-(2**63), 2**63 - 1)
    uniform16 = words.view(torch.int16)[:n].view(shape)  # uniform over [-32768, 32767]
    cut = round(p * 65536)
    return (uniform16 >= cut - 32768).to(like.dtype), 65536 / (65536 - cut)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout (same semantics as ``F.dropout``); on CPU, with the mask of :func:`_keep_mask`."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)  # fused and fast on accelerators
    keep, scale = _keep_mask(x.shape, p, x)
    return x * keep.mul_(scale)


class TransformerBlock(nn.Module):
    """One bidirectional encoder block: multi-head self-attention and a GELU feed-forward.

    ``norm_first=False`` is BERT's post-norm (``x = LN(x + sublayer(x))``); ``norm_first=True`` is
    pre-norm (``x = x + sublayer(LN(x))``), which trains more stably when deeper or with a high lr.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.n_heads = cfg.n_heads
        self.norm_first = cfg.norm_first
        self.p_dropout = cfg.dropout
        self.p_attention = cfg.attention_dropout
        self.qkv = nn.Linear(d, 3 * d)  # fused: one GEMM instead of three
        self.attn_out = nn.Linear(d, d)
        self.ff_in = nn.Linear(d, cfg.ff_multiplier * d)
        self.ff_out = nn.Linear(cfg.ff_multiplier * d, d)
        self.norm_attn = nn.LayerNorm(d)
        self.norm_ff = nn.LayerNorm(d)

    def attention(
        self, x: Tensor, attn_mask: Tensor | None, last_only: bool = False, rows: Tensor | None = None
    ) -> Tensor:
        """Self-attention over ``x: [B, L, d]``; ``attn_mask: Bool[B, 1, 1, L]``, True where a key counts.

        ``last_only`` computes the output of the last position only (``[B, 1, d]``; every position is
        still a key), which is all that next-item prediction needs from the last block. ``rows``
        (``Bool[B, L]``) keeps the selected positions before the output projection (``[M, d]``).
        """
        B, L, d = x.shape
        hs = d // self.n_heads
        if last_only:
            # Keys and values for every position, the query of the last one only: a third less GEMM.
            w, b = self.qkv.weight, self.qkv.bias
            q = (
                F.linear(x[:, -1:], w[:d], b[:d]).view(B, 1, self.n_heads, hs).transpose(1, 2)
            )  # [B, nh, 1, hs]
            k, v = (
                F.linear(x, w[d:], b[d:])  # [B, L, 2d]
                .view(B, L, 2, self.n_heads, hs)
                .permute(2, 0, 3, 1, 4)  # [2, B, nh, L, hs]
                .unbind(0)
            )
        else:
            q, k, v = (
                self.qkv(x)  # [B, L, 3d]
                .view(B, L, 3, self.n_heads, hs)
                .permute(2, 0, 3, 1, 4)  # [3, B, nh, L, hs]
                .unbind(0)
            )
        if self.training and self.p_attention > 0.0:
            y = self._attention_with_dropout(q, k, v, attn_mask)  # [B, nh, Lq, hs]
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, nh, Lq, hs]
        y = y.transpose(1, 2).reshape(B, q.shape[2], d)  # [B, Lq, d]
        return self.attn_out(y if rows is None else y[rows])  # [B, Lq, d] or [M, d]

    def _attention_with_dropout(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None) -> Tensor:
        """Softmax attention with dropout on the weights; ``q, k, v: [B, nh, L, hs] -> [B, nh, L, hs]``.

        On GPUs SDPA fuses the dropout. On CPU it has no fused kernel with dropout and its math fallback
        is several times slower, so the weights are materialised here, a few sequences at a time: each
        ``[chunk, nh, L, L]`` tensor stays around ``_CHUNK_BYTES``, small enough to stay in cache between
        the softmax, dropout and matmul, and under glibc's 32 MB mmap threshold, so the allocator reuses
        memory instead of page-faulting fresh zeroed pages on every allocation.
        """
        if q.device.type != "cpu":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=self.p_attention)
        B, nh, Lq, _ = q.shape
        chunk = max(1, _CHUNK_BYTES // (nh * Lq * k.shape[2] * 4))
        if chunk >= B:
            return self._attention_chunk(q, k, v, attn_mask)
        # split, not slicing in a loop: split's backward is one cat, a slice's is a zeroed full-size copy.
        qs, ks, vs = q.split(chunk), k.split(chunk), v.split(chunk)
        masks: list[Tensor | None] = [None] * len(qs) if attn_mask is None else list(attn_mask.split(chunk))
        return torch.cat([self._attention_chunk(*blk) for blk in zip(qs, ks, vs, masks, strict=True)])

    def _attention_chunk(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None) -> Tensor:
        """Explicit attention for a few sequences. Passes over the ``[B, nh, L, L]`` weights dominate, so
        there are as few as possible: the key mask is added inside the GEMM (baddbmm), the dropout scale
        is applied to ``v`` (L x hs) rather than to the weights (L x L), and dropping is one multiply."""
        B, nh, Lq, hs = q.shape
        Lk = k.shape[2]
        if _PAD_SOFTMAX_FROM <= Lk < _MIN_SOFTMAX_ROW:
            # PyTorch's CPU softmax (forward and backward) vectorises rows of >= 16 only: a 15-wide row
            # costs about 15x more per element (measured). Keys that are always masked (zero, with zero
            # values) make every row 16 wide; their weights are exactly 0. Below 8 keys the padding
            # costs more than it saves (measured at batch 64, 2 heads).
            pad = _MIN_SOFTMAX_ROW - Lk
            k, v = F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))  # [B, nh, 16, hs]
            real = (
                torch.ones((B, 1, 1, Lk), dtype=torch.bool, device=q.device)
                if attn_mask is None
                else attn_mask
            )
            attn_mask = torch.cat([real, real.new_zeros((*real.shape[:-1], pad))], dim=-1)  # [B, 1, 1, 16]
            Lk = _MIN_SOFTMAX_ROW
        q3 = (q * hs**-0.5).reshape(B * nh, Lq, hs)  # [B*nh, Lq, hs]
        kt = k.reshape(B * nh, Lk, hs).transpose(1, 2)  # [B*nh, hs, Lk]
        if attn_mask is None:
            att = torch.bmm(q3, kt)  # [B*nh, Lq, Lk]
        else:
            bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(
                ~attn_mask, float("-inf")
            )  # [B, 1, 1, Lk]
            att = torch.baddbmm(bias.expand(B, nh, 1, Lk).reshape(B * nh, 1, Lk), q3, kt)  # [B*nh, Lq, Lk]
        weights = att.view(B, nh, Lq, Lk).softmax(dim=-1)  # [B, nh, Lq, Lk]
        keep, scale = _keep_mask(weights.shape, self.p_attention, weights)
        return torch.matmul(weights * keep, v * scale)  # [B, nh, Lq, hs]

    def feed_forward(self, x: Tensor) -> Tensor:
        """Position-wise ``Linear -> GELU -> Linear``; works on ``[B, L, d]`` or gathered ``[M, d]``."""
        return self.ff_out(F.gelu(self.ff_in(x)))

    def attention_sublayer(
        self, x: Tensor, attn_mask: Tensor | None, last_only: bool = False, rows: Tensor | None = None
    ) -> Tensor:
        """Residual attention sub-layer with its norm: ``[B, L, d] -> [B, L, d]`` (``[B, 1, d]`` if
        ``last_only``, ``[M, d]`` for the positions selected by ``rows: Bool[B, L]``: everything after
        the attention weights is position-wise, so it runs on those rows only)."""
        residual = x[:, -1:] if last_only else x
        if rows is not None:
            residual = residual[rows]  # [M, d]
        if self.norm_first:
            y = self.attention(self.norm_attn(x), attn_mask, last_only, rows)
            return residual + dropout(y, self.p_dropout, self.training)
        y = self.attention(x, attn_mask, last_only, rows)
        return self.norm_attn(residual + dropout(y, self.p_dropout, self.training))

    def feed_forward_sublayer(self, x: Tensor) -> Tensor:
        """Residual feed-forward sub-layer with its norm, position-wise: ``[..., d] -> [..., d]``."""
        if self.norm_first:
            return x + dropout(self.feed_forward(self.norm_ff(x)), self.p_dropout, self.training)
        return self.norm_ff(x + dropout(self.feed_forward(x), self.p_dropout, self.training))

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        """``x: [B, L, d] -> [B, L, d]``."""
        return self.feed_forward_sublayer(self.attention_sublayer(x, attn_mask))


class BERT4Rec(nn.Module):
    """BERT4Rec (Sun et al., CIKM 2019) with a tied (or untied) output embedding and per-item bias.

    Layout: item + position embeddings -> LayerNorm -> dropout -> ``n_layers`` encoder blocks ->
    (final LayerNorm when pre-norm) -> output projection ``LayerNorm(GELU(h W + b))`` (the paper's
    eq. 7, with BERT's LayerNorm) -> dot product with the output embedding + item bias.

    Args:
        n_items: number of real items; the vocabulary is ``n_items + 2`` (PAD, items, MASK).
        cfg: architecture (width, depth, heads, max_len, dropout, norm placement, tied output, bias).
    """

    def __init__(self, n_items: int, cfg: ModelConfig) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.cfg = cfg
        self.n_items = n_items
        self.mask_id = n_items + 1
        self.vocab_size = n_items + 2
        self.max_len = cfg.resolved_max_len()
        d = cfg.hidden_size

        self.item_embedding = nn.Embedding(self.vocab_size, d, padding_idx=PAD)
        self.position_embedding = nn.Embedding(self.max_len, d)
        self.embedding_norm = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        # Pre-norm leaves the residual stream un-normalised; a final LayerNorm puts it back on scale.
        self.final_norm: nn.Module = nn.LayerNorm(d) if cfg.norm_first else nn.Identity()
        # BERT4Rec's output projection (paper eq. 7): GELU(h W + b), then LayerNorm as in BERT's MLM head,
        # before the dot product with the item embeddings.
        self.head = nn.Linear(d, d)
        self.head_norm = nn.LayerNorm(d)
        self.output_embedding: nn.Parameter | None = (
            None if cfg.tied_output else nn.Parameter(torch.empty(self.vocab_size, d))
        )
        self.item_bias: nn.Parameter | None = (
            nn.Parameter(torch.zeros(self.vocab_size)) if cfg.item_bias else None
        )
        self.sparse_item_grad = False
        self.reset_parameters()

    def set_sparse_item_grad(self, enabled: bool) -> None:
        """Give the ``[V, d]`` item table(s) row-sparse gradients (only the rows a step looked up).

        A step of a sampled loss touches a few thousand of the catalogue's rows; a dense gradient costs
        a ``[V, d]`` allocation, zeroing, clipping and optimiser update every step whatever the catalogue
        size. The optimiser has to accept sparse gradients (``recsys.training.optim.RowSparseAdamW``).
        """
        self.sparse_item_grad = enabled
        self.item_embedding.sparse = enabled

    # ---------------------------------------------------------------------------------------- init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """BERT initialisation: truncated normal (std 0.02, cut at 2 std), zero biases, unit LayerNorms."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=_INIT_STD, a=-2 * _INIT_STD, b=2 * _INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self.item_embedding.weight[PAD].zero_()
        if self.output_embedding is not None:
            nn.init.trunc_normal_(self.output_embedding, std=_INIT_STD, a=-2 * _INIT_STD, b=2 * _INIT_STD)
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias)

    # ------------------------------------------------------------------------------------ encoder
    def _encode_to_last_block(self, items: Tensor) -> tuple[Tensor, Tensor | None]:
        """Embeddings and all blocks but the last; returns ``([B, L, d], attn_mask)``."""
        seq_len = items.shape[1]
        if seq_len > self.max_len:
            raise ValueError(f"sequence length {seq_len} exceeds max_len {self.max_len}")
        # Positions count back from the end (left padding): the last column is always max_len - 1.
        pos = self.position_embedding.weight[self.max_len - seq_len :]  # [L, d]
        x = self.embedding_norm(self.item_embedding(items) + pos)  # [B, L, d]
        x = dropout(x, self.cfg.dropout, self.training)

        keep = items != PAD  # [B, L]
        attn_mask: Tensor | None
        # (An exported graph cannot branch on data: it always takes the masked path, which gives the same
        # numbers.)
        if not torch.compiler.is_exporting() and bool(keep.all()):
            attn_mask = None  # no padding in this batch: let SDPA take its unmasked fast path
        else:
            # A row that is all padding would softmax over nothing and give NaN; let it attend everywhere.
            # Its outputs are never used, but NaN would poison gradients and batch statistics.
            keep = keep | ~keep.any(dim=1, keepdim=True)
            attn_mask = keep[:, None, None, :]  # [B, 1, 1, L]
        for block in self.blocks[:-1]:
            x = block(x, attn_mask)
        return x, attn_mask

    def _output_transform(self, h: Tensor) -> Tensor:
        """Final norm + output head on ``[..., d]`` (position-wise, so it can run on gathered rows)."""
        return self.head_norm(F.gelu(self.head(self.final_norm(h))))

    def encode(self, items: Tensor) -> Tensor:
        """Hidden states for every position.

        Args:
            items: ``Long[B, L]`` left-padded item indices (may contain MASK), ``L <= max_len``.

        Returns:
            ``Float[B, L, d]``, ready to be dotted with :meth:`output_weight`.
        """
        x, attn_mask = self._encode_to_last_block(items)
        x = self.blocks[-1](x, attn_mask)  # [B, L, d]
        return self._output_transform(x)

    def forward(self, items: Tensor) -> Tensor:
        """Same as :meth:`encode`."""
        return self.encode(items)

    def hidden_at(self, items: Tensor, positions: Tensor) -> Tensor:
        """Hidden states at the selected positions only (the masked ones, in training).

        Equal to ``encode(items)[positions]`` but cheaper: the last block's feed-forward and the output
        head run on the ``M`` selected rows instead of all ``B * L``.

        Args:
            items: ``Long[B, L]`` model inputs (after masking).
            positions: ``Bool[B, L]``, True where a hidden state is wanted (e.g. ``labels > 0``).

        Returns:
            ``Float[M, d]`` in row-major order of ``positions`` (the order of ``labels[positions]``).
        """
        x, attn_mask = self._encode_to_last_block(items)
        last = self.blocks[-1]
        assert isinstance(last, TransformerBlock)
        # The last block's attention needs every position as a key; everything after it is position-wise.
        h = last.attention_sublayer(x, attn_mask, rows=positions)  # [M, d]
        h = last.feed_forward_sublayer(h)
        return self._output_transform(h)

    # ------------------------------------------------------------------------------------- output
    def output_weight(self) -> Tensor:
        """``Float[V, d]``: the item embedding (tied) or the separate output embedding."""
        return self.item_embedding.weight if self.output_embedding is None else self.output_embedding

    def output_bias(self) -> Tensor | None:
        """``Float[V]`` per-item score bias, or None when ``cfg.item_bias`` is off."""
        return self.item_bias

    def output_rows(self, items: Tensor) -> tuple[Tensor, Tensor | None]:
        """Output embeddings ``[*items.shape, d]`` and biases ``[*items.shape]`` of the given items.

        Row-sparse gradients under :meth:`set_sparse_item_grad`. Callers gather all the rows they need
        in ONE call: without sparse gradients each gather's backward is a dense ``[V, d]`` gradient.
        """
        bias = self.output_bias()
        weight = F.embedding(items, self.output_weight(), sparse=self.sparse_item_grad)
        return weight, None if bias is None else bias.index_select(0, items.reshape(-1)).view(items.shape)

    def score(self, hidden: Tensor) -> Tensor:
        """Scores of every vocabulary entry for each hidden state.

        Args:
            hidden: ``Float[N, d]``.

        Returns:
            ``Float[N, V]``; the PAD and MASK columns are ``-inf`` so they never rank.
        """
        scores = F.linear(hidden, self.output_weight(), self.output_bias())  # [N, V]
        # In place is safe for autograd: linear's backward does not need its output.
        scores[:, PAD] = float("-inf")
        scores[:, self.mask_id] = float("-inf")
        return scores

    def next_state(self, history: Tensor) -> Tensor:
        """The hidden state of a [MASK] appended after each history: what :meth:`score` ranks items with
        (a user vector for downstream models).

        Args:
            history: ``Long[B, L]`` left-padded histories (any ``L``; only the most recent
                ``max_len - 1`` items are kept, leaving room for the [MASK]).

        Returns:
            ``Float[B, d]``.
        """
        history = history[:, -(self.max_len - 1) :]  # [B, L']
        mask_col = torch.full((history.shape[0], 1), self.mask_id, dtype=history.dtype, device=history.device)
        items = torch.cat([history, mask_col], dim=1)  # [B, L' + 1]
        x, attn_mask = self._encode_to_last_block(items)
        last = self.blocks[-1]
        assert isinstance(last, TransformerBlock)
        h = last.attention_sublayer(x, attn_mask, last_only=True)[:, 0]  # [B, d]: the [MASK] only
        return self._output_transform(last.feed_forward_sublayer(h))

    def predict_next(self, history: Tensor) -> Tensor:
        """Next-item scores: append [MASK] after the history and score that position only.

        Args:
            history: ``Long[B, L]`` left-padded histories (see :meth:`next_state`).

        Returns:
            ``Float[B, V]`` with PAD and MASK at ``-inf`` (already-seen items are NOT excluded).
        """
        return self.score(self.next_state(history))  # [B, V]
