"""Training losses over the masked positions, behind one call signature.

Every loss is an ``nn.Module`` called as ``loss(hidden, targets, model, generator=None) -> scalar`` with
``hidden: Float[M, d]`` the hidden states at the M masked positions (:meth:`BERT4Rec.hidden_at`) and
``targets: Long[M]`` the true items (1..n_items). :func:`build_loss` picks the class from the typed
config. Logits are computed in float32 whatever the autocast dtype, since softmax/log-sigmoid over
thousands of candidates loses too much in bfloat16.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.config import FullSoftmaxLoss, GBCELoss, LossConfig, SampledSoftmaxLoss
from recsys.model.bert4rec import BERT4Rec

__all__ = ["GBCE", "FullSoftmax", "RecLoss", "SampledSoftmax", "build_loss", "gbce_beta"]

_BLOCK_BYTES = 8 * 2**20
_MIN_BLOCK_ROWS = 256  # huge catalogues: fewer, larger blocks rather than thousands of tiny GEMMs


class RecLoss(nn.Module):
    """Base class fixing the call signature shared by all losses."""

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


def _gather_output(model: BERT4Rec, items: Tensor) -> tuple[Tensor, Tensor | None]:
    """Output embeddings ``[*items.shape, d]`` and biases ``[*items.shape]`` of the given items.

    Callers gather positives and negatives in ONE call: each gather's backward scatters into a dense
    ``[V, d]`` gradient, which for a million-item catalogue is 256 MB to allocate, zero and add.
    """
    bias = model.output_bias()
    return model.output_weight()[items], None if bias is None else bias[items]


class FullSoftmax(RecLoss):
    """Cross-entropy over the whole catalogue (items 1..n_items; PAD and MASK are not classes)."""

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
        # usually a CPU one while the model is on a GPU), so keep one copy per device used.
        self._probs = {probs.device: probs.float()}

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """``Long[N]`` negatives in 1..n_items, drawn with replacement, on the loss's device."""
        draw = _draw_device(generator, self.log_q.device)
        if self.sampling == "uniform":
            neg = torch.randint(1, self.n_items + 1, (self.n_negatives,), generator=generator, device=draw)
        else:
            if draw not in self._probs:
                self._probs[draw] = next(iter(self._probs.values())).to(draw)
            probs = self._probs[draw]
            neg = torch.multinomial(probs, self.n_negatives, replacement=True, generator=generator) + 1
        return neg.to(self.log_q.device, non_blocking=True)

    def forward(
        self, hidden: Tensor, targets: Tensor, model: BERT4Rec, generator: torch.Generator | None = None
    ) -> Tensor:
        """Mean sampled-softmax cross-entropy with freshly drawn negatives."""
        return self.loss_with_negatives(hidden, targets, model, self.sample(generator))

    def loss_with_negatives(
        self, hidden: Tensor, targets: Tensor, model: BERT4Rec, negatives: Tensor
    ) -> Tensor:
        """The loss for given shared negatives ``Long[N]`` (exposed for tests and custom samplers)."""
        M, N = targets.shape[0], negatives.shape[0]
        if M == 0:
            return _empty_loss(hidden)
        w, b = _gather_output(model, torch.cat([targets, negatives]))  # [M + N, d], [M + N]
        w_pos, w_neg = w[:M], w[M:]
        pos_shift = torch.zeros(M, device=hidden.device) if b is None else b[:M].float()  # [M]
        neg_shift = torch.zeros(N, device=hidden.device) if b is None else b[M:].float()  # [N]
        if self.logq_correction:
            pos_shift = pos_shift - self.log_q[targets]
            neg_shift = neg_shift - self.log_q[negatives]
        total = hidden.new_zeros((), dtype=torch.float32)
        for rows in _row_blocks(M, N + 1):
            h = hidden[rows]
            pos = (h.float() * w_pos[rows].float()).sum(-1) + pos_shift[rows]  # [rows]
            neg = F.linear(h, w_neg).float() + neg_shift  # [rows, N]
            neg = neg.masked_fill(negatives[None, :] == targets[rows, None], float("-inf"))
            logits = torch.cat([pos[:, None], neg], dim=1)  # [rows, 1 + N], the target in column 0
            # -log softmax(logits)[0]
            total = total + (torch.logsumexp(logits, dim=1) - pos).sum()
        return total / M


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
            w, b = _gather_output(model, candidates)  # [M, 1 + k, d], [M, 1 + k]
            logits = torch.bmm(w, hidden[:, :, None].to(w.dtype)).squeeze(2).float()  # [M, 1 + k]
            if b is not None:
                logits = logits + b.float()
        pos, neg = logits[:, 0], logits[:, 1:]  # [M], [M, k]
        # -log sigmoid(x) = softplus(-x);  -log(1 - sigmoid(x)) = softplus(x)
        per_position = self.beta * F.softplus(-pos) + F.softplus(neg).sum(dim=1)  # [M]
        return per_position.mean() / (neg.shape[1] + 1)


def build_loss(cfg: LossConfig, n_items: int, item_counts: Tensor | None = None) -> RecLoss:
    """The loss module for a typed loss config.

    Args:
        cfg: :class:`FullSoftmaxLoss`, :class:`SampledSoftmaxLoss` or :class:`GBCELoss`.
        n_items: catalogue size (items 1..n_items).
        item_counts: ``Long[n_items + 2]`` training counts per item index, needed for popularity sampling.
    """
    if isinstance(cfg, FullSoftmaxLoss):
        return FullSoftmax(n_items, cfg.label_smoothing)
    if isinstance(cfg, SampledSoftmaxLoss):
        return SampledSoftmax(n_items, cfg.n_negatives, cfg.sampling, cfg.logq_correction, item_counts)
    if isinstance(cfg, GBCELoss):
        return GBCE(n_items, cfg.n_negatives, cfg.t)
    raise TypeError(f"unsupported loss config {type(cfg).__name__}")
