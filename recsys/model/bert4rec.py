"""BERT4Rec: a bidirectional Transformer over item sequences, scored only where it is needed.

Index conventions (docs/CONTRACTS.md): PAD = 0, real items 1..n_items, MASK = n_items + 1, so the vocabulary
has V = n_items + 2 rows. Inputs are LEFT-padded and position ids count back from the end, so the most
recent item always sits at position ``max_len - 1`` whatever the padded width of the batch.

Nothing here ever builds a ``[batch, seq_len, V]`` tensor: training scores the masked positions only
(:meth:`BERT4Rec.hidden_at` + a loss), inference the appended [MASK] only (:meth:`BERT4Rec.predict_next`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.config import ModelConfig
from recsys.model.blocks import TransformerBlock, dropout

__all__ = ["PAD", "BERT4Rec", "FeatureIndex", "TransformerBlock", "dropout"]

PAD = 0
"""Index of the padding item; never masked, never scored."""

_INIT_STD = 0.02  # BERT's initializer_range


@dataclass(frozen=True)
class FeatureIndex:
    """Item side features as a CSR index over the vocabulary rows (PAD, items, MASK).

    Attributes:
        offsets: ``Long[V + 1]``: row ``r``'s features are ``index[offsets[r]:offsets[r + 1]]``.
        index: ``Long[nnz]`` feature ids in ``0 .. n_features - 1``.
        n_features: size of the feature vocabulary.
    """

    offsets: Tensor
    index: Tensor
    n_features: int

    @classmethod
    def placeholder(cls, vocab_size: int, nnz: int, n_features: int) -> FeatureIndex:
        """Zeros of the right shapes, for a model whose buffers a state dict will fill (bundle loading)."""
        return cls(
            torch.zeros(vocab_size + 1, dtype=torch.long), torch.zeros(nnz, dtype=torch.long), n_features
        )


class BERT4Rec(nn.Module):
    """BERT4Rec (Sun et al., CIKM 2019) with a tied (or untied) output embedding and per-item bias.

    Layout: item + position embeddings -> LayerNorm -> dropout -> ``n_layers`` encoder blocks ->
    (final LayerNorm when pre-norm) -> output projection ``LayerNorm(GELU(h W + b))`` (the paper's
    eq. 7, with BERT's LayerNorm) -> dot product with the output embedding + item bias.

    Options from the BERT family (all off by default): ALBERT's factorised item embedding
    (``embedding_size`` e < d: the encoder runs at width d, items are embedded and scored at width e) and
    cross-layer sharing (``share_layers``); DeBERTa's disentangled relative-position attention
    (``relative_attention``) and stochastic depth (``drop_path``).

    Item side features (``features``): each feature has an embedding row, and an item's row is its own
    embedding plus the mean of its features' (:meth:`item_table`), both where items are read and where
    they are scored (tied output; an untied output embedding gets the same mean added). Items that share
    a category or brand share part of their representation, which is what rare items lack.

    Args:
        n_items: number of real items; the vocabulary is ``n_items + 2`` (PAD, items, MASK).
        cfg: architecture (width, depth, heads, max_len, dropout, norm placement, tied output, bias,
            the options above).
        features: the items' side features, or None.
    """

    feature_offsets: Tensor  # buffers, with side features only
    feature_index: Tensor

    def __init__(self, n_items: int, cfg: ModelConfig, features: FeatureIndex | None = None) -> None:
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.cfg = cfg
        self.n_items = n_items
        self.mask_id = n_items + 1
        self.vocab_size = n_items + 2
        self.max_len = cfg.resolved_max_len()
        self.p_dropout = cfg.resolved_dropout()[0]
        d = cfg.hidden_size
        e = self.output_size = cfg.embedding_size or d  # the item embedding's width (ALBERT: e < d)

        self.item_embedding = nn.Embedding(self.vocab_size, e, padding_idx=PAD)
        # Side features: a [n_features, e] table and the CSR index (buffers: saved with the weights).
        self.feature_embedding: nn.Embedding | None = None
        if features is not None:
            if features.offsets.shape != (self.vocab_size + 1,):
                raise ValueError(
                    f"feature offsets have shape {tuple(features.offsets.shape)}, expected "
                    f"({self.vocab_size + 1},): one row per vocabulary entry plus one"
                )
            self.feature_embedding = nn.Embedding(features.n_features, e)
            self.register_buffer("feature_offsets", features.offsets.to(torch.long).clone())
            self.register_buffer("feature_index", features.index.to(torch.long).clone())
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

    @property
    def n_features(self) -> int:
        """Size of the side-feature vocabulary (0: no features)."""
        return 0 if self.feature_embedding is None else self.feature_embedding.num_embeddings

    def feature_shapes(self) -> dict[str, int]:
        """What :meth:`FeatureIndex.placeholder` needs to rebuild this model (empty without features)."""
        if self.feature_embedding is None:
            return {}
        return {"n_features": self.n_features, "nnz": int(self.feature_index.numel())}

    def set_sparse_item_grad(self, enabled: bool) -> None:
        """Give the ``[V, d]`` item table(s) row-sparse gradients (only the rows a step looked up).

        A step of a sampled loss touches a few thousand of the catalogue's rows; a dense gradient costs
        a ``[V, d]`` allocation, zeroing, clipping and optimiser update every step whatever the catalogue
        size. The optimiser has to accept sparse gradients (``recsys.training.optim.RowSparseAdamW``).
        Not with side features: every step recomposes the whole item table (:meth:`item_table`).
        """
        if enabled and self.feature_embedding is not None:
            raise ValueError("row-sparse item gradients do not combine with item side features")
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
        if self.feature_embedding is None:
            emb = self.item_embedding(items)  # [B, L, e]
        else:
            emb = F.embedding(items, self.item_table(), padding_idx=PAD)  # [B, L, e]
        if self.embedding_projection is not None:
            emb = self.embedding_projection(emb)  # [B, L, d]
        x = self.embedding_norm(emb + pos)  # [B, L, d]
        x = dropout(x, self.p_dropout, self.training)

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
    def _pooled_features(self) -> Tensor:
        """``Float[V, e]``: each vocabulary row's mean feature embedding (zeros for a row without any)."""
        assert self.feature_embedding is not None
        return F.embedding_bag(
            self.feature_index,
            self.feature_embedding.weight,
            self.feature_offsets,
            mode="mean",
            include_last_offset=True,
        )

    def item_table(self) -> Tensor:
        """``Float[V, e]``: the item rows the encoder reads: the item embedding, plus the mean of each
        item's feature embeddings when the model has side features."""
        if self.feature_embedding is None:
            return self.item_embedding.weight
        return self.item_embedding.weight + self._pooled_features()

    def output_weight(self) -> Tensor:
        """``Float[V, e]``: the item rows scored against: :meth:`item_table` (tied) or the separate
        output embedding (plus the pooled features, with side features)."""
        if self.output_embedding is None:
            return self.item_table()
        if self.feature_embedding is None:
            return self.output_embedding
        return self.output_embedding + self._pooled_features()

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
