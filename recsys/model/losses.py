"""Training losses over the masked positions, behind one call signature.

Every loss is an ``nn.Module`` called as ``loss(hidden, targets, model, generator=None) -> scalar`` with
``hidden: Float[M, d]`` the hidden states at the M masked positions (:meth:`BERT4Rec.hidden_at`) and
``targets: Long[M]`` the true items (1..n_items). :func:`build_loss` picks the class from the typed
config. Logits are computed in float32 whatever the autocast dtype, since softmax/log-sigmoid over
thousands of candidates loses too much in bfloat16.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.config import AutoLoss, FullSoftmaxLoss, GBCELoss, LossConfig, SampledSoftmaxLoss
from recsys.model.bert4rec import BERT4Rec

__all__ = ["GBCE", "FullSoftmax", "RecLoss", "SampledSoftmax", "build_loss", "gbce_beta", "resolve_loss"]

_BLOCK_BYTES = 8 * 2**20
_MIN_BLOCK_ROWS = 256  # huge catalogues: fewer, larger blocks rather than thousands of tiny GEMMs


class RecLoss(nn.Module):
    """Base class fixing the call signature shared by all losses."""

    touches_every_item = False
    """True when every step scores the whole catalogue (its item-table gradient is dense anyway)."""

    def forward(
        self, hidden: Tensor, targets: Tensor, model: BERT4Rec, generator: torch.Generator | None = None
    ) -> Tensor:
        """Mean loss over the M positions; ``hidden: Float[M, d]``, ``targets: Long[M]``."""
        raise NotImplementedError


def _draw_device(generator: torch.Generator | None, default: torch.device) -> torch.device:
    """Random draws must happen on the generator's device; without one, on ``default``."""
    return default if generator is None else generator.device


def _row_blocks(n_rows: int, n_cols: int) -> list[slice]:
    """Row ranges so that a float32 ``[rows, n_cols]`` logit block stays around ``_BLOCK_BYTES``.

    Computing the loss block by block (the sum of per-block sums is the same loss) keeps every logit,
    probability and gradient tensor small: it stays in cache between the GEMM, the log-softmax and their
    backward, and under glibc's 32 MB mmap threshold, so memory is reused instead of page-faulted in
    fresh on every step. On ML-1M (M ~ 5000 masked positions, 3416 items) this cut the full-softmax
    forward + backward by about a third on CPU.
    """
    rows = max(_MIN_BLOCK_ROWS, _BLOCK_BYTES // (4 * max(n_cols, 1)))
    return [slice(start, start + rows) for start in range(0, n_rows, rows)]


def _empty_loss(hidden: Tensor) -> Tensor:
    """Zero loss that is still connected to the graph (a batch with no masked position)."""
    return hidden.sum().float() * 0.0


class FullSoftmax(RecLoss):
    """Cross-entropy over the whole catalogue (items 1..n_items; PAD and MASK are not classes)."""

    touches_every_item = True

    def __init__(self, n_items: int, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.n_items = n_items
        self.label_smoothing = label_smoothing

    def forward(
        self, hidden: Tensor, targets: Tensor, model: BERT4Rec, generator: torch.Generator | None = None
    ) -> Tensor:
        """Mean cross-entropy; ``generator`` is unused (no sampling)."""
        M = targets.shape[0]
        if M == 0:
            return _empty_loss(hidden)
        items = slice(1, self.n_items + 1)  # a row slice is a view: no copy of the [V, d] table
        weight, bias = model.output_weight()[items], model.output_bias()
        bias = None if bias is None else bias[items]
        classes = targets - 1
        total = hidden.new_zeros((), dtype=torch.float32)
        for rows in _row_blocks(M, self.n_items):
            logits = F.linear(hidden[rows], weight, bias).float()  # [rows, n_items]
            total = total + F.cross_entropy(
                logits, classes[rows], label_smoothing=self.label_smoothing, reduction="sum"
            )
        return total / M


class SampledSoftmax(RecLoss):
    """Softmax over the target and N negatives shared by the batch, with logQ correction.

    Negatives are drawn with replacement, uniformly or proportionally to ``item_counts`` (clamped at
    1 so that an item unseen in training can still be a positive with a finite correction). With
    ``logq_correction`` every candidate's logit, the positive's included, is reduced by the log of its
    sampling probability (Yi et al., RecSys 2019), which makes the sampled softmax an unbiased-in-the-limit
    estimate of the full one under popularity sampling. A negative equal to a row's target
    (an accidental hit) is removed from that row.
    """

    log_q: Tensor

    def __init__(
        self,
        n_items: int,
        n_negatives: int,
        sampling: Literal["uniform", "popularity"] = "uniform",
        logq_correction: bool = True,
        item_counts: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.n_items = n_items
        self.n_negatives = n_negatives
        self.sampling = sampling
        self.logq_correction = logq_correction
        if sampling == "uniform":
            probs = torch.full((n_items,), 1.0 / n_items, dtype=torch.float64)
        elif sampling == "popularity":
            if item_counts is None:
                raise ValueError("popularity sampling needs item_counts")
            if item_counts.shape != (n_items + 2,):
                shape = tuple(item_counts.shape)
                raise ValueError(f"item_counts must have shape [{n_items + 2}], got {shape}")
            counts = item_counts[1 : n_items + 1].to(torch.float64).clamp_min(1.0)
            probs = counts / counts.sum()
        else:
            raise ValueError(f"unknown sampling {sampling!r}")
        # Indexed by item (PAD/MASK rows never used); float32 is plenty for a log-probability.
        log_q = torch.zeros(n_items + 2, dtype=torch.float64)
        log_q[1 : n_items + 1] = probs.log()
        self.register_buffer("log_q", log_q.float(), persistent=False)
        # Not a buffer: sampling happens on the generator's device (the trainer's seeded generator is
        # usually a CPU one while the model is on a GPU), so keep one copy per device used. Drawn by
        # inverse CDF: torch.multinomial rebuilds the cumulative sum of all n_items every call (0.3 ms
        # a step at 54k items, measured), a binary search per draw does not.
        cdf = probs.cumsum(0)
        cdf[-1] = 1.0  # exact, so that every uniform draw in [0, 1) finds an item
        self._cdf = {cdf.device: cdf}

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``Long[N]`` negatives in 1..n_items, drawn with replacement, on the loss's device."""
        draw = _draw_device(generator, self.log_q.device)
        if self.sampling == "uniform":
            neg = torch.randint(1, self.n_items + 1, (self.n_negatives,), generator=generator, device=draw)
        else:
            if draw not in self._cdf:
                self._cdf[draw] = next(iter(self._cdf.values())).to(draw)
            cdf = self._cdf[draw]
            u = torch.rand(self.n_negatives, generator=generator, device=draw, dtype=cdf.dtype)
            neg = torch.searchsorted(cdf, u, right=True).clamp_max_(self.n_items - 1) + 1
        return neg.to(self.log_q.device, non_blocking=True)

    def forward(
        self, hidden: Tensor, targets: Tensor, model: BERT4Rec, generator: torch.Generator | None = None
    ) -> Tensor:
        """Mean sampled-softmax cross-entropy with freshly drawn negatives."""
        return self.loss_with_negatives(hidden, targets, model, self.sample(generator))

    def loss_with_negatives(
        self, hidden: Tensor, targets: Tensor, model: BERT4Rec, negatives: Tensor
    ) -> Tensor:
        """The loss for given shared negatives ``Long[N]`` (exposed for tests and custom samplers).

        Per row: ``logsumexp([s+, s-_1..s-_N]) - s+``, with the ``[rows, N]`` negative scores made by
        one GEMM (bias and logQ shift fused in) and never copied: the positive joins through
        ``logaddexp`` on ``[rows]``, accidental hits are set to ``-inf`` in place.
        """
        M, N = targets.shape[0], negatives.shape[0]
        if M == 0:
            return _empty_loss(hidden)
        w, b = model.output_rows(torch.cat([targets, negatives]))  # [M + N, d], [M + N]
        shift = None if b is None else b.float()
        if self.logq_correction and self.sampling == "popularity":
            # Uniform sampling shifts every logit by the same log(1/n): a no-op in the softmax.
            log_q = self.log_q.index_select(0, torch.cat([targets, negatives]))
            shift = -log_q if shift is None else shift - log_q
        # split, not slices: a slice's backward is a zeroed [M + N, d] copy each, split's is one cat.
        w_pos, w_neg = w.split((M, N))
        pos_shift, neg_shift = (None, None) if shift is None else shift.split((M, N))
        hit_rows, hit_cols = _accidental_hits(targets, negatives)
        total = hidden.new_zeros((), dtype=torch.float32)
        for rows in _row_blocks(M, N + 1):
            h = hidden[rows]
            pos = (h * w_pos[rows]).sum(-1).float()  # [rows]
            if pos_shift is not None:
                pos = pos + pos_shift[rows]
            neg = _scores(h, w_neg, neg_shift)  # [rows, N]
            in_block = (hit_rows >= rows.start) & (hit_rows < rows.start + h.shape[0])
            neg.index_put_((hit_rows[in_block] - rows.start, hit_cols[in_block]), neg.new_tensor(-math.inf))
            total = total + (torch.logaddexp(pos, torch.logsumexp(neg, dim=1)) - pos).sum()
        return total / M


def _scores(hidden: Tensor, weight: Tensor, shift: Tensor | None) -> Tensor:
    """``hidden @ weight.T + shift`` as float32: one fused GEMM, or under autocast the GEMM in the
    autocast dtype and the shift (biases, logQ: large values) added in float32."""
    if shift is not None and not torch.is_autocast_enabled(hidden.device.type):
        return F.linear(hidden, weight, shift.to(hidden.dtype))
    out = F.linear(hidden, weight).float()
    return out if shift is None else out + shift


def _accidental_hits(targets: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor]:
    """``(rows, columns)`` of every negative equal to its row's target.

    Hits are rare (about N / n_items per row), so instead of comparing all ``[M, N]`` pairs the N
    negatives are sorted once and each target is looked up in them.
    """
    ordered, order = negatives.sort()
    first = torch.searchsorted(ordered, targets)  # [M]
    counts = torch.searchsorted(ordered, targets, right=True) - first  # [M], mostly 0
    rows = torch.repeat_interleave(torch.arange(targets.shape[0], device=targets.device), counts)
    # The k-th hit of a row is ordered[first[row] + k]; k counts up from each row's first hit.
    run_start = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    k = torch.arange(rows.shape[0], device=targets.device) - run_start
    return rows, order[first[rows] + k]


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's calibration exponent: ``beta = alpha * (t * (1 - 1/alpha) + 1/alpha)``.

    ``alpha = n_negatives / (n_items - 1)`` is the negative sampling rate; ``t = 0`` gives ``beta = 1``
    (plain BCE), ``t = 1`` gives ``beta = alpha`` (fully calibrated).
    """
    alpha = n_negatives / max(n_items - 1, 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


class GBCE(RecLoss):
    """Generalised binary cross-entropy (Petrov & Macdonald, RecSys 2023, "gSASRec").

    Per masked position, k negatives are drawn uniformly from the catalogue minus the target, and

        loss = -1/(k + 1) * [log(sigmoid(s+)^beta) + sum_k log(1 - sigmoid(s-_k))]

    i.e. the positive's probability is raised to the power beta (:func:`gbce_beta`), which counters
    the overconfidence that negative sampling induces. The 1/(k + 1) is the paper's normalisation (and
    the official code's mean over all k + 1 logits), so that ``t = 0`` is exactly PyTorch's mean BCE
    and the gradient scale does not grow with k. The result is averaged over positions.
    """

    def __init__(self, n_items: int, n_negatives: int, t: float) -> None:
        super().__init__()
        if n_items < 2:
            raise ValueError("gBCE needs at least 2 items (negatives exclude the target)")
        self.n_items = n_items
        self.n_negatives = n_negatives
        self.t = t
        self.beta = gbce_beta(n_negatives, n_items, t)

    def sample(self, targets: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``Long[M, k]`` negatives, uniform over 1..n_items without the row's target."""
        # Draw from n_items - 1 values and shift those at or above the target: exactly uniform over the
        # other items, no rejection loop.
        draw = _draw_device(generator, targets.device)
        shape = (targets.shape[0], self.n_negatives)
        neg = torch.randint(1, self.n_items, shape, generator=generator, device=draw).to(targets.device)
        return neg + (neg >= targets[:, None]).long()

    def forward(
        self, hidden: Tensor, targets: Tensor, model: BERT4Rec, generator: torch.Generator | None = None
    ) -> Tensor:
        """Mean gBCE with freshly drawn per-position negatives."""
        return self.loss_with_negatives(hidden, targets, model, self.sample(targets, generator))

    def loss_with_negatives(
        self, hidden: Tensor, targets: Tensor, model: BERT4Rec, negatives: Tensor
    ) -> Tensor:
        """The loss for given per-position negatives ``Long[M, k]``."""
        M = targets.shape[0]
        if M == 0:
            return _empty_loss(hidden)
        candidates = torch.cat([targets[:, None], negatives], dim=1)  # [M, 1 + k], the target first
        if self.n_items <= negatives.shape[1] * hidden.shape[1]:
            # Small catalogue: [rows, V] GEMMs and a gather beat gathering [M, 1 + k, d] embeddings.
            weight, bias = model.output_weight(), model.output_bias()
            logits = torch.cat(
                [
                    F.linear(hidden[rows], weight, bias).float().gather(1, candidates[rows])
                    for rows in _row_blocks(M, weight.shape[0])
                ]
            )  # [M, 1 + k]
        else:
            # One gather for all rows: its backward is one dense [V, d] gradient, not one per block.
            w, b = model.output_rows(candidates)  # [M, 1 + k, d], [M, 1 + k]
            logits = torch.bmm(w, hidden[:, :, None].to(w.dtype)).squeeze(2).float()  # [M, 1 + k]
            if b is not None:
                logits = logits + b.float()
        pos, neg = logits[:, 0], logits[:, 1:]  # [M], [M, k]
        # -log sigmoid(x) = softplus(-x);  -log(1 - sigmoid(x)) = softplus(x)
        per_position = self.beta * F.softplus(-pos) + F.softplus(neg).sum(dim=1)  # [M]
        return per_position.mean() / (neg.shape[1] + 1)


def resolve_loss(cfg: LossConfig, n_items: int) -> FullSoftmaxLoss | SampledSoftmaxLoss | GBCELoss:
    """The concrete loss config: ``auto`` resolved for a catalogue of ``n_items``, anything else as is."""
    return cfg.resolve(n_items) if isinstance(cfg, AutoLoss) else cfg


def build_loss(cfg: LossConfig, n_items: int, item_counts: Tensor | None = None) -> RecLoss:
    """The loss module for a typed loss config.

    Args:
        cfg: :class:`AutoLoss` (resolved for ``n_items`` by :meth:`AutoLoss.resolve`),
            :class:`FullSoftmaxLoss`, :class:`SampledSoftmaxLoss` or :class:`GBCELoss`.
        n_items: catalogue size (items 1..n_items).
        item_counts: ``Long[n_items + 2]`` training counts per item index, needed for popularity sampling.
    """
    cfg = resolve_loss(cfg, n_items)
    if isinstance(cfg, FullSoftmaxLoss):
        return FullSoftmax(n_items, cfg.label_smoothing)
    if isinstance(cfg, SampledSoftmaxLoss):
        return SampledSoftmax(n_items, cfg.n_negatives, cfg.sampling, cfg.logq_correction, item_counts)
    if isinstance(cfg, GBCELoss):
        return GBCE(n_items, cfg.n_negatives, cfg.t)
    raise TypeError(f"unsupported loss config {type(cfg).__name__}")
