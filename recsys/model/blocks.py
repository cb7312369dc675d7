"""The encoder block of BERT4Rec, and the CPU fast paths of its dropout and attention.

One :class:`TransformerBlock`: multi-head self-attention (optionally with DeBERTa's disentangled
relative-position terms) and a GELU feed-forward, each a residual sub-layer with its LayerNorm. On CPU
the dropout and the attention-with-dropout run through measured hand-written paths (:func:`dropout`,
``TransformerBlock._attention_chunk``); on accelerators, through PyTorch's fused kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.config import ModelConfig

__all__ = ["TransformerBlock", "dropout"]


def _distance_index(n_query: int, n_key: int, n_rel: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Flat indices ``[n_query * n_key]`` into the relative score tables: query ``i`` (position
    ``n_key - n_query + i``) and key ``j`` read ``c2p[i, clamp(j - i) + R]`` and
    ``p2c[j, clamp(i - j) + R]``."""
    far = (n_rel - 1) // 2
    query_pos = torch.arange(n_key - n_query, n_key, device=device)
    key_pos = torch.arange(n_key, device=device)
    ahead = (key_pos[None, :] - query_pos[:, None]).clamp(-far, far) + far  # [n_query, n_key]: j - i + R
    c2p = torch.arange(n_query, device=device)[:, None] * n_rel + ahead
    p2c = key_pos[None, :] * n_rel + (2 * far - ahead)
    return c2p.reshape(-1), p2c.reshape(-1)


_CHUNK_BYTES = 8 * 2**20  # target size of one materialised attention-weight block on CPU (see below)
_MIN_SOFTMAX_ROW = 16  # shortest softmax row PyTorch's CPU kernel vectorises (see _attention_chunk)
_PAD_SOFTMAX_FROM = 8  # shorter rows are left as they are: padding them costs more than it saves


def _in_chunks(
    attend: Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor],
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None,
) -> Tensor:
    """``attend(q, k, v, mask)`` over a few sequences at a time, so that each ``[chunk, nh, Lq, L]`` score
    tensor stays around ``_CHUNK_BYTES`` (see ``TransformerBlock._attention_with_dropout``)."""
    B, nh, Lq, _ = q.shape
    chunk = max(1, _CHUNK_BYTES // (nh * Lq * k.shape[2] * 4))
    if chunk >= B:
        return attend(q, k, v, attn_mask)
    # split, not slicing in a loop: split's backward is one cat, a slice's is a zeroed full-size copy.
    qs, ks, vs = q.split(chunk), k.split(chunk), v.split(chunk)
    masks: list[Tensor | None] = [None] * len(qs) if attn_mask is None else list(attn_mask.split(chunk))
    return torch.cat([attend(*blk) for blk in zip(qs, ks, vs, masks, strict=True)])


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
        self.p_dropout, self.p_attention = cfg.resolved_dropout()
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
        kr, qr = self._relative_tables(relative, q.shape[-1])
        index = _distance_index(q.shape[2], k.shape[2], relative.shape[0], q.device)
        return self._relative_bias(q, k, kr, qr, index, None)

    def _relative_tables(self, relative: Tensor, hs: int) -> tuple[Tensor, Tensor]:
        """This block's key and query projections of the distance table, ``[nh, 2R + 1, hs]`` each, with
        the score scale on them (the small tables, not the ``[B, nh, Lq, L]`` result)."""
        assert self.pos_key is not None and self.pos_query is not None
        n_rel, scale = relative.shape[0], (3 * hs) ** -0.5
        kr = self.pos_key(relative).view(n_rel, self.n_heads, hs).transpose(0, 1) * scale
        qr = self.pos_query(relative).view(n_rel, self.n_heads, hs).transpose(0, 1) * scale
        return kr, qr

    @staticmethod
    def _relative_bias(
        q: Tensor, k: Tensor, kr: Tensor, qr: Tensor, index: tuple[Tensor, Tensor], key_mask: Tensor | None
    ) -> Tensor:
        """The bias from the scaled tables and :func:`_distance_index`'s flat indices.

        Both terms are gathered from their small ``[B, nh, *, 2R + 1]`` score tables straight into the
        ``[Lq, L]`` layout (no transposed pass), and masked keys get ``-inf`` in the small
        position-to-content table, which the sum carries over (no masking pass over ``L x L``)."""
        B, nh, Lq, _ = q.shape
        L = k.shape[2]
        c2p = torch.matmul(q, kr.transpose(1, 2))  # [B, nh, Lq, 2R+1]: query i against distance r
        p2c = torch.matmul(k, qr.transpose(1, 2))  # [B, nh, L, 2R+1]: key j against distance r
        if key_mask is not None:
            p2c = p2c.masked_fill(~key_mask.transpose(-1, -2), float("-inf"))  # [B, 1, L, 1]
        bias = c2p.flatten(2).gather(-1, index[0].expand(B, nh, -1))  # [B, nh, Lq * L]
        # In place: gather's backward needs neither output.
        return bias.add_(p2c.flatten(2).gather(-1, index[1].expand(B, nh, -1))).view(B, nh, Lq, L)

    def _relative_attention(
        self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, relative: Tensor
    ) -> Tensor:
        """Attention with the relative bias, ``[B, nh, Lq, hs]``. On CPU the bias is built and used a few
        sequences at a time (``_CHUNK_BYTES`` each), so it stays in cache and under glibc's mmap
        threshold: a whole batch's ``[B, nh, L, L]`` bias is hundreds of MB of freshly faulted pages
        (building it whole was half the cost of scoring a batch, measured)."""
        hs = q.shape[-1]
        scale = (3 * hs) ** -0.5
        kr, qr = self._relative_tables(relative, hs)
        index = _distance_index(q.shape[2], k.shape[2], relative.shape[0], q.device)
        exporting = torch.compiler.is_exporting()

        def attend(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
            bias = self._relative_bias(q, k, kr, qr, index, key_mask)
            if self.training and self.p_attention > 0.0:
                return self._attention_with_dropout(q, k, v, bias, scale)
            if exporting:
                # The exporter's SDPA decomposition cannot take this float bias (a stride error); the
                # same attention, written out, exports.
                return torch.matmul((torch.matmul(q, k.transpose(-1, -2)) * scale + bias).softmax(-1), v)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)

        if q.device.type != "cpu" or exporting:
            return attend(q, k, v, attn_mask)
        return _in_chunks(attend, q, k, v, attn_mask)

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
        if relative is not None:
            y = self._relative_attention(q, k, v, attn_mask, relative)  # [B, nh, Lq, hs]
        elif self.training and self.p_attention > 0.0:
            y = self._attention_with_dropout(q, k, v, attn_mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, nh, Lq, hs]
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
        return _in_chunks(partial(self._attention_chunk, scale=scale), q, k, v, attn_mask)

    def _attention_chunk(
        self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, scale: float
    ) -> Tensor:
        """Explicit attention for a few sequences. Passes over the ``[B, nh, L, L]`` weights dominate, so
        there are as few as possible: the key mask is added inside the GEMM (baddbmm), the dropout scale
        is applied to ``v`` (L x hs) rather than to the weights (L x L), and dropping is one multiply."""
        B, nh, Lq, hs = q.shape
        Lk = k.shape[2]
        relative = attn_mask is not None and attn_mask.is_floating_point()  # a relative-position bias
        if not relative and _PAD_SOFTMAX_FROM <= Lk < _MIN_SOFTMAX_ROW:
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
            if relative:
                bias = attn_mask.reshape(B * nh, Lq, Lk)
            else:
                bias = (
                    torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device)
                    .masked_fill_(~attn_mask, float("-inf"))  # [B, 1, 1, Lk]
                    .expand(B, nh, 1, Lk)
                    .reshape(B * nh, 1, Lk)
                )
            att = torch.baddbmm(bias, q3, kt)  # [B*nh, Lq, Lk]
        weights = att.view(B, nh, Lq, Lk).softmax(dim=-1)  # [B, nh, Lq, Lk]
        keep, dropout_scale = _keep_mask(weights.shape, self.p_attention, weights)
        return torch.matmul(weights * keep, v * dropout_scale)  # [B, nh, Lq, hs]

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
