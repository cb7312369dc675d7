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
        # DeBERTa: this block's projections of the shared relative-distance table into keys and queries.
        self.pos_key: nn.Linear | None = nn.Linear(d, d) if cfg.relative_attention else None
        self.pos_query: nn.Linear | None = nn.Linear(d, d) if cfg.relative_attention else None

    def relative_bias(self, q: Tensor, k: Tensor, relative: Tensor) -> Tensor:
        """DeBERTa's disentangled position terms of the attention scores, ``[B, nh, Lq, L]``.

        ``score(i, j) = (q_i k_j + q_i Kr[j - i] + k_j Qr[i - j]) / sqrt(3 hs)``: content-to-position
        (how a query item attends to what lies ``j - i`` steps away) and position-to-content (how a key
        item is seen from ``i - j`` steps away). ``relative: [2R + 1, d]`` holds one row per clipped
        distance ``-R..R``; ``Kr`` and ``Qr`` are this block's projections of it. Query ``i`` of ``Lq``
        is position ``L - Lq + i`` (the last ones: ``last_only`` asks for the final position).
        """
        B, nh, Lq, hs = q.shape
        L = k.shape[2]
        n_rel = relative.shape[0]
        far = (n_rel - 1) // 2
        assert self.pos_key is not None and self.pos_query is not None
        kr = self.pos_key(relative).view(n_rel, nh, hs).transpose(0, 1)  # [nh, 2R+1, hs]
        qr = self.pos_query(relative).view(n_rel, nh, hs).transpose(0, 1)  # [nh, 2R+1, hs]
        query_pos = torch.arange(L - Lq, L, device=q.device)
        key_pos = torch.arange(L, device=q.device)
        ahead = (key_pos[None, :] - query_pos[:, None]).clamp(-far, far) + far  # [Lq, L]: j - i
        c2p = torch.matmul(q, kr.transpose(1, 2)).gather(-1, ahead.expand(B, nh, Lq, L))  # [B, nh, Lq, L]
        behind = (2 * far - ahead).T  # [L, Lq]: i - j, for key j and query i
        p2c = torch.matmul(k, qr.transpose(1, 2)).gather(-1, behind.expand(B, nh, L, Lq))  # [B, nh, L, Lq]
        return (c2p + p2c.transpose(-1, -2)) * (3 * hs) ** -0.5

    def attention(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        last_only: bool = False,
        rows: Tensor | None = None,
        relative: Tensor | None = None,
    ) -> Tensor:
        """Self-attention over ``x: [B, L, d]``; ``attn_mask: Bool[B, 1, 1, L]``, True where a key counts.

        ``last_only`` computes the output of the last position only (``[B, 1, d]``; every position is
        still a key), which is all that next-item prediction needs from the last block. ``rows``
        (``Bool[B, L]``) keeps the selected positions before the output projection (``[M, d]``).
        ``relative`` (``[2R + 1, d]``, with ``relative_attention``) adds :meth:`relative_bias`.
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
        mask: Tensor | None = attn_mask  # Bool[B, 1, 1, L], or the float scores' bias [B, nh, Lq, L]
        scale = hs**-0.5
        if relative is not None:
            mask = self.relative_bias(q, k, relative)
            if attn_mask is not None:
                mask = mask.masked_fill(~attn_mask, float("-inf"))
            scale = (3 * hs) ** -0.5
        if self.training and self.p_attention > 0.0:
            y = self._attention_with_dropout(q, k, v, mask, scale)  # [B, nh, Lq, hs]
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # [B, nh, Lq, hs]
        y = y.transpose(1, 2).reshape(B, q.shape[2], d)  # [B, Lq, d]
        return self.attn_out(y if rows is None else y[rows])  # [B, Lq, d] or [M, d]

    def _attention_with_dropout(
        self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, scale: float | None = None
    ) -> Tensor:
        """Softmax attention with dropout on the weights; ``q, k, v: [B, nh, L, hs] -> [B, nh, L, hs]``.
        ``attn_mask``: Bool ``[B, 1, 1, L]`` (keys that count) or a float bias ``[B, nh, Lq, L]``;
        ``scale`` of the scores: ``hs ** -0.5`` unless given.

        On GPUs SDPA fuses the dropout. On CPU it has no fused kernel with dropout and its math fallback
        is several times slower, so the weights are materialised here, a few sequences at a time: each
        ``[chunk, nh, L, L]`` tensor stays around ``_CHUNK_BYTES``, small enough to stay in cache between
        the softmax, dropout and matmul, and under glibc's 32 MB mmap threshold, so the allocator reuses
        memory instead of page-faulting fresh zeroed pages on every allocation.
        """
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        if q.device.type != "cpu":
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.p_attention, scale=scale
            )
        B, nh, Lq, _ = q.shape
        chunk = max(1, _CHUNK_BYTES // (nh * Lq * k.shape[2] * 4))
        if chunk >= B:
            return self._attention_chunk(q, k, v, attn_mask, scale)
        # split, not slicing in a loop: split's backward is one cat, a slice's is a zeroed full-size copy.
        qs, ks, vs = q.split(chunk), k.split(chunk), v.split(chunk)
        masks: list[Tensor | None] = [None] * len(qs) if attn_mask is None else list(attn_mask.split(chunk))
        return torch.cat([self._attention_chunk(*blk, scale) for blk in zip(qs, ks, vs, masks, strict=True)])

    def _attention_chunk(
        self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, scale: float
    ) -> Tensor:
        """Explicit attention for a few sequences. Passes over the ``[B, nh, L, L]`` weights dominate, so
        there are as few as possible: the key mask is added inside the GEMM (baddbmm), the dropout scale
        is applied to ``v`` (L x hs) rather than to the weights (L x L), and dropping is one multiply."""
        B, nh, Lq, hs = q.shape
        Lk = k.shape[2]
        if attn_mask is not None and attn_mask.is_floating_point():  # a relative-position bias
            q3 = (q * scale).reshape(B * nh, Lq, hs)
            kt = k.reshape(B * nh, Lk, hs).transpose(1, 2)  # [B*nh, hs, Lk]
            att = torch.baddbmm(attn_mask.reshape(B * nh, Lq, Lk), q3, kt)  # [B*nh, Lq, Lk]
            weights = att.view(B, nh, Lq, Lk).softmax(dim=-1)
            keep, dscale = _keep_mask(weights.shape, self.p_attention, weights)
            return torch.matmul(weights * keep, v * dscale)  # [B, nh, Lq, hs]
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
        q3 = (q * scale).reshape(B * nh, Lq, hs)  # [B*nh, Lq, hs]
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
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        last_only: bool = False,
        rows: Tensor | None = None,
        relative: Tensor | None = None,
        depth_scale: Tensor | None = None,
    ) -> Tensor:
        """Residual attention sub-layer with its norm: ``[B, L, d] -> [B, L, d]`` (``[B, 1, d]`` if
        ``last_only``, ``[M, d]`` for the positions selected by ``rows: Bool[B, L]``: everything after
        the attention weights is position-wise, so it runs on those rows only). ``depth_scale``
        (stochastic depth, broadcastable to the output) multiplies the sub-layer's branch."""
        residual = x[:, -1:] if last_only else x
        if rows is not None:
            residual = residual[rows]  # [M, d]
        y = self.attention(self.norm_attn(x) if self.norm_first else x, attn_mask, last_only, rows, relative)
        y = dropout(y, self.p_dropout, self.training)
        if depth_scale is not None:
            y = y * depth_scale
        return residual + y if self.norm_first else self.norm_attn(residual + y)

    def feed_forward_sublayer(self, x: Tensor, depth_scale: Tensor | None = None) -> Tensor:
        """Residual feed-forward sub-layer with its norm, position-wise: ``[..., d] -> [..., d]``."""
        y = self.feed_forward(self.norm_ff(x) if self.norm_first else x)
        y = dropout(y, self.p_dropout, self.training)
        if depth_scale is not None:
            y = y * depth_scale
        return x + y if self.norm_first else self.norm_ff(x + y)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        relative: Tensor | None = None,
        depth_scale: Tensor | None = None,
    ) -> Tensor:
        """``x: [B, L, d] -> [B, L, d]``; ``depth_scale``: ``[B, 1, 1]`` or None."""
        h = self.attention_sublayer(x, attn_mask, relative=relative, depth_scale=depth_scale)
        return self.feed_forward_sublayer(h, depth_scale)


class BERT4Rec(nn.Module):
    """BERT4Rec (Sun et al., CIKM 2019) with a tied (or untied) output embedding and per-item bias.

    Layout: item + position embeddings -> LayerNorm -> dropout -> ``n_layers`` encoder blocks ->
    (final LayerNorm when pre-norm) -> output projection ``LayerNorm(GELU(h W + b))`` (the paper's
    eq. 7, with BERT's LayerNorm) -> dot product with the output embedding + item bias.

    Options from the BERT family (all off by default): ALBERT's factorised item embedding
    (``embedding_size`` e < d: the encoder runs at width d, items are embedded and scored at width e) and
    cross-layer sharing (``share_layers``); DeBERTa's disentangled relative-position attention
    (``relative_attention``) and stochastic depth (``drop_path``).

    Args:
        n_items: number of real items; the vocabulary is ``n_items + 2`` (PAD, items, MASK).
        cfg: architecture (width, depth, heads, max_len, dropout, norm placement, tied output, bias,
            the options above).
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
        e = self.output_size = cfg.embedding_size or d  # the item embedding's width (ALBERT: e < d)

        self.item_embedding = nn.Embedding(self.vocab_size, e, padding_idx=PAD)
        # ALBERT's factorised embedding: V x e item rows, one e x d projection into the encoder.
        self.embedding_projection: nn.Linear | None = nn.Linear(e, d, bias=False) if e != d else None
        self.position_embedding = nn.Embedding(self.max_len, d)
        self.embedding_norm = nn.LayerNorm(d)
        # ALBERT's cross-layer sharing: one block's weights for every layer. `layers` is the stack in
        # order (a plain list: the parameters are registered once, through `blocks`).
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg) for _ in range(1 if cfg.share_layers else cfg.n_layers)
        )
        self.layers: list[TransformerBlock] = [
            self.blocks[0 if cfg.share_layers else i]  # type: ignore[misc]
            for i in range(cfg.n_layers)
        ]
        # Stochastic depth: layer i of n is skipped with probability drop_path * i / n (the last: drop_path).
        self.depth_drop = [cfg.drop_path * (i + 1) / cfg.n_layers for i in range(cfg.n_layers)]
        # DeBERTa: one table of relative distances -R..R shared by the blocks, each projecting it.
        self.relative_embedding: nn.Embedding | None = (
            nn.Embedding(2 * cfg.relative_distance + 1, d) if cfg.relative_attention else None
        )
        self.relative_norm: nn.Module = nn.LayerNorm(d) if cfg.relative_attention else nn.Identity()
        # Pre-norm leaves the residual stream un-normalised; a final LayerNorm puts it back on scale.
        self.final_norm: nn.Module = nn.LayerNorm(d) if cfg.norm_first else nn.Identity()
        # BERT4Rec's output projection (paper eq. 7): GELU(h W + b), then LayerNorm as in BERT's MLM head,
        # before the dot product with the item embeddings (into their width e, when factorised).
        self.head = nn.Linear(d, e)
        self.head_norm = nn.LayerNorm(e)
        self.output_embedding: nn.Parameter | None = (
            None if cfg.tied_output else nn.Parameter(torch.empty(self.vocab_size, e))
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
        if self.embedding_projection is not None:
            # std 1/sqrt(e) keeps a projected item row on the scale of an unfactorised one (std 0.02),
            # next to the position embedding; at 0.02 the items start 50x fainter and barely learn.
            e = self.embedding_projection.in_features
            nn.init.trunc_normal_(
                self.embedding_projection.weight, std=e**-0.5, a=-2 * e**-0.5, b=2 * e**-0.5
            )
        if self.output_embedding is not None:
            nn.init.trunc_normal_(self.output_embedding, std=_INIT_STD, a=-2 * _INIT_STD, b=2 * _INIT_STD)
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias)

    # ------------------------------------------------------------------------------------ encoder
    def _depth_scale(self, layer: int, batch: int, like: Tensor) -> Tensor | None:
        """Stochastic depth for ``layers[layer]`` in training: ``[B]`` per-sequence 0 (skipped) or
        ``1 / (1 - p)`` (kept, so the expected branch is unchanged); None when nothing is dropped."""
        p = self.depth_drop[layer]
        if not self.training or p == 0.0:
            return None
        keep = torch.rand(batch, device=like.device) >= p  # the default generator, seeded per step
        return keep.to(like.dtype) / (1.0 - p)

    def _relative_table(self) -> Tensor | None:
        """The normalised relative-distance table ``[2R + 1, d]`` (relative attention), else None."""
        if self.relative_embedding is None:
            return None
        return self.relative_norm(self.relative_embedding.weight)

    def _encode_to_last_block(self, items: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Embeddings and all blocks but the last; returns ``([B, L, d], attn_mask, relative table)``."""
        seq_len = items.shape[1]
        if seq_len > self.max_len:
            raise ValueError(f"sequence length {seq_len} exceeds max_len {self.max_len}")
        # Positions count back from the end (left padding): the last column is always max_len - 1.
        pos = self.position_embedding.weight[self.max_len - seq_len :]  # [L, d]
        emb = self.item_embedding(items)  # [B, L, e]
        if self.embedding_projection is not None:
            emb = self.embedding_projection(emb)  # [B, L, d]
        x = self.embedding_norm(emb + pos)  # [B, L, d]
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
        relative = self._relative_table()
        for i, block in enumerate(self.layers[:-1]):
            scale = self._depth_scale(i, x.shape[0], x)
            x = block(x, attn_mask, relative, None if scale is None else scale[:, None, None])
        return x, attn_mask, relative

    def _last_block(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        relative: Tensor | None,
        last_only: bool = False,
        rows: Tensor | None = None,
    ) -> Tensor:
        """The last block: ``[B, L, d]``, or the ``[B, d]`` last position (``last_only``), or the
        ``[M, d]`` rows selected by ``rows`` (everything after its attention is position-wise)."""
        block = self.layers[-1]
        B, L, _ = x.shape
        scale = self._depth_scale(len(self.layers) - 1, B, x)  # [B] or None
        if scale is None:
            sub = None
        elif rows is not None:
            sub = scale[:, None].expand(B, L)[rows][:, None]  # [M, 1]: each row's sequence
        else:
            sub = scale[:, None, None]  # [B, 1, 1]
        h = block.attention_sublayer(x, attn_mask, last_only, rows, relative, sub)
        h = block.feed_forward_sublayer(h, sub)
        return h[:, 0] if last_only else h

    def _output_transform(self, h: Tensor) -> Tensor:
        """Final norm + output head on ``[..., d]`` (position-wise, so it can run on gathered rows)."""
        return self.head_norm(F.gelu(self.head(self.final_norm(h))))

    def encode(self, items: Tensor) -> Tensor:
        """Hidden states for every position.

        Args:
            items: ``Long[B, L]`` left-padded item indices (may contain MASK), ``L <= max_len``.

        Returns:
            ``Float[B, L, e]``, ready to be dotted with :meth:`output_weight`.
        """
        x, attn_mask, relative = self._encode_to_last_block(items)
        return self._output_transform(self._last_block(x, attn_mask, relative))  # [B, L, e]

    def states(self, items: Tensor) -> Tensor:
        """The encoder's output at every position, before the output head: ``Float[B, L, d]`` (what
        per-position heads such as ELECTRA's replaced-item detection read)."""
        x, attn_mask, relative = self._encode_to_last_block(items)
        return self.final_norm(self._last_block(x, attn_mask, relative))

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
            ``Float[M, e]`` in row-major order of ``positions`` (the order of ``labels[positions]``).
        """
        x, attn_mask, relative = self._encode_to_last_block(items)
        # The last block's attention needs every position as a key; everything after it is position-wise.
        return self._output_transform(self._last_block(x, attn_mask, relative, rows=positions))  # [M, e]

    # ------------------------------------------------------------------------------------- output
    def output_weight(self) -> Tensor:
        """``Float[V, e]``: the item embedding (tied) or the separate output embedding."""
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
            hidden: ``Float[N, e]``.

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
            ``Float[B, e]``.
        """
        history = history[:, -(self.max_len - 1) :]  # [B, L']
        mask_col = torch.full((history.shape[0], 1), self.mask_id, dtype=history.dtype, device=history.device)
        items = torch.cat([history, mask_col], dim=1)  # [B, L' + 1]
        x, attn_mask, relative = self._encode_to_last_block(items)
        h = self._last_block(x, attn_mask, relative, last_only=True)  # [B, d]: the [MASK] only
        return self._output_transform(h)

    def predict_next(self, history: Tensor) -> Tensor:
        """Next-item scores: append [MASK] after the history and score that position only.

        Args:
            history: ``Long[B, L]`` left-padded histories (see :meth:`next_state`).

        Returns:
            ``Float[B, V]`` with PAD and MASK at ``-inf`` (already-seen items are NOT excluded).
        """
        return self.score(self.next_state(history))  # [B, V]
