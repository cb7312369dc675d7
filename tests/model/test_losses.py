"""Losses: full softmax, sampled softmax (logQ, accidental hits), gBCE, and their config dispatch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recsys.config import (
    AUTO_SAMPLED_ABOVE,
    AutoLoss,
    FullSoftmaxLoss,
    GBCELoss,
    ModelConfig,
    SampledSoftmaxLoss,
)
from recsys.model import losses
from recsys.model.bert4rec import BERT4Rec
from recsys.model.losses import GBCE, FullSoftmax, SampledSoftmax, build_loss, gbce_beta, resolve_loss

N_ITEMS = 40


@pytest.fixture
def model() -> BERT4Rec:
    torch.manual_seed(0)
    m = BERT4Rec(
        N_ITEMS,
        ModelConfig(hidden_size=16, n_layers=1, n_heads=2, max_len=8, dropout=0.1, attention_dropout=0.1),
    ).eval()
    with torch.no_grad():  # make scores spread out so that the comparisons mean something
        m.item_embedding.weight.mul_(20)
        assert m.item_bias is not None
        m.item_bias.normal_()
    return m


def batch(m: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(m, 16, generator=g)
    targets = torch.randint(1, N_ITEMS + 1, (m,), generator=g)
    return hidden, targets


def reference_full_softmax(hidden: torch.Tensor, targets: torch.Tensor, model: BERT4Rec) -> torch.Tensor:
    scores = model.score(hidden)[:, 1 : N_ITEMS + 1]  # drop the -inf PAD and MASK columns
    return F.cross_entropy(scores, targets - 1)


def test_build_loss_dispatches_on_config_type() -> None:
    counts = torch.arange(N_ITEMS + 2)
    assert isinstance(build_loss(FullSoftmaxLoss(), N_ITEMS, None), FullSoftmax)
    assert isinstance(build_loss(SampledSoftmaxLoss(), N_ITEMS, None), SampledSoftmax)
    assert isinstance(build_loss(SampledSoftmaxLoss(sampling="popularity"), N_ITEMS, counts), SampledSoftmax)
    assert isinstance(build_loss(GBCELoss(), N_ITEMS, None), GBCE)
    with pytest.raises(ValueError, match="item_counts"):
        build_loss(SampledSoftmaxLoss(sampling="popularity"), N_ITEMS, None)


def test_full_softmax_matches_cross_entropy_over_score(model: BERT4Rec) -> None:
    hidden, targets = batch()
    loss = build_loss(FullSoftmaxLoss(), N_ITEMS, None)(hidden, targets, model)
    torch.testing.assert_close(loss, reference_full_softmax(hidden, targets, model))
    smoothed = build_loss(FullSoftmaxLoss(label_smoothing=0.1), N_ITEMS, None)(hidden, targets, model)
    expected = F.cross_entropy(model.score(hidden)[:, 1:-1], targets - 1, label_smoothing=0.1)
    torch.testing.assert_close(smoothed, expected)


@pytest.mark.parametrize("logq", [False, True])
def test_sampled_softmax_with_every_item_as_negative_equals_full_softmax(model: BERT4Rec, logq: bool) -> None:
    hidden, targets = batch()
    loss = SampledSoftmax(N_ITEMS, N_ITEMS, "uniform", logq_correction=logq)
    every_item = torch.arange(1, N_ITEMS + 1)
    got = loss.loss_with_negatives(hidden, targets, model, every_item)
    torch.testing.assert_close(got, reference_full_softmax(hidden, targets, model), atol=1e-5, rtol=1e-5)


def test_auto_loss_picks_full_softmax_up_to_the_threshold_and_sampled_above() -> None:
    auto = AutoLoss()
    assert f"{AUTO_SAMPLED_ABOVE:,}" in (AutoLoss.model_fields["sampled_above"].description or "")
    assert resolve_loss(auto, AUTO_SAMPLED_ABOVE) == FullSoftmaxLoss()
    above = resolve_loss(auto, AUTO_SAMPLED_ABOVE + 1)
    assert above == SampledSoftmaxLoss(
        n_negatives=auto.n_negatives, sampling=auto.sampling, logq_correction=True
    )
    counts = torch.ones(AUTO_SAMPLED_ABOVE + 3, dtype=torch.long)
    assert isinstance(build_loss(auto, AUTO_SAMPLED_ABOVE + 1, counts), SampledSoftmax)
    assert isinstance(
        build_loss(AutoLoss(sampled_above=N_ITEMS - 1), N_ITEMS, torch.ones(N_ITEMS + 2)), SampledSoftmax
    )
    assert isinstance(build_loss(AutoLoss(sampled_above=N_ITEMS), N_ITEMS, None), FullSoftmax)
    assert resolve_loss(GBCELoss(), 10**7) == GBCELoss()  # explicit kinds are kept whatever the size


def test_accidental_hits_found_by_search_equal_brute_force() -> None:
    g = torch.Generator().manual_seed(5)
    targets = torch.randint(1, 8, (40,), generator=g)
    negatives = torch.randint(1, 8, (13,), generator=g)  # many repeats: several hits per row
    rows, cols = losses._accidental_hits(targets, negatives)
    expected = (negatives[None, :] == targets[:, None]).nonzero()
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == sorted(map(tuple, expected.tolist()))


def test_sampled_softmax_logq_and_accidental_hits_by_hand(model: BERT4Rec) -> None:
    counts = torch.zeros(N_ITEMS + 2, dtype=torch.long)
    counts[1 : N_ITEMS + 1] = torch.arange(1, N_ITEMS + 1)
    loss = SampledSoftmax(N_ITEMS, 3, "popularity", logq_correction=True, item_counts=counts)
    hidden, targets = batch(m=2)
    targets = torch.tensor([5, 9])
    negatives = torch.tensor([5, 17, 30])  # 5 is an accidental hit for row 0 only
    got = loss.loss_with_negatives(hidden, targets, model, negatives)

    q = counts.double() / counts.sum()
    s = model.score(hidden).double()  # [2, V]
    losses = []
    for row, target in enumerate(targets.tolist()):
        cands = [target] + [n for n in negatives.tolist() if n != target]
        logits = torch.stack([s[row, c] - q[c].log() for c in cands])
        losses.append(-torch.log_softmax(logits, 0)[0])
    torch.testing.assert_close(got.double(), torch.stack(losses).mean(), atol=1e-5, rtol=1e-5)


def test_sampled_softmax_sampling(model: BERT4Rec) -> None:
    counts = torch.zeros(N_ITEMS + 2, dtype=torch.long)
    counts[1] = 1000  # item 1 dominates; items with count 0 still get a count of 1
    popular = SampledSoftmax(N_ITEMS, 5000, "popularity", item_counts=counts)
    neg = popular.sample(torch.Generator().manual_seed(0))
    assert neg.min() >= 1 and neg.max() <= N_ITEMS
    share = (neg == 1).float().mean().item()
    assert abs(share - 1000 / (1000 + N_ITEMS - 1)) < 0.03
    uniform = SampledSoftmax(N_ITEMS, 4000, "uniform")
    neg = uniform.sample(torch.Generator().manual_seed(0))
    assert neg.min() >= 1 and neg.max() <= N_ITEMS
    assert torch.bincount(neg, minlength=N_ITEMS + 2)[1:-1].min() > 50
    # Seeded: same generator state, same negatives, same loss.
    hidden, targets = batch()
    a = uniform(hidden, targets, model, torch.Generator().manual_seed(3))
    b = uniform(hidden, targets, model, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_gbce_beta() -> None:
    assert gbce_beta(256, 3417, 0.0) == pytest.approx(1.0)
    assert gbce_beta(256, 3417, 1.0) == pytest.approx(256 / 3416)
    alpha = 256 / 3416
    assert gbce_beta(256, 3417, 0.75) == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))


@pytest.mark.parametrize("n_negatives", [2, 200])  # 2 * d < n_items: gathered rows; 200: full logits
def test_gbce_with_t0_is_plain_bce(model: BERT4Rec, n_negatives: int) -> None:
    hidden, targets = batch()
    loss = GBCE(N_ITEMS, n_negatives, t=0.0)
    negatives = loss.sample(targets, torch.Generator().manual_seed(0))
    got = loss.loss_with_negatives(hidden, targets, model, negatives)
    s = model.score(hidden)
    pos = s.gather(1, targets[:, None])  # [M, 1]
    neg = s.gather(1, negatives)  # [M, k]
    logits = torch.cat([pos, neg], dim=1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    # PyTorch's BCE, averaged over all positive and negative logits (the paper's 1 / (k + 1)).
    expected = F.binary_cross_entropy_with_logits(logits, labels)
    torch.testing.assert_close(got, expected)


def test_gbce_beta_weights_the_positive_term(model: BERT4Rec) -> None:
    hidden, targets = batch()
    loss = GBCE(N_ITEMS, 4, t=0.5)
    negatives = loss.sample(targets, torch.Generator().manual_seed(0))
    got = loss.loss_with_negatives(hidden, targets, model, negatives)
    s = model.score(hidden)
    pos = s.gather(1, targets[:, None]).squeeze(1)
    neg = s.gather(1, negatives)
    # -1/(k+1) [log(sigmoid(s+)^beta) + sum log(1 - sigmoid(s-))]
    expected = -(torch.log(torch.sigmoid(pos) ** loss.beta) + torch.log1p(-torch.sigmoid(neg)).sum(1)) / 5
    torch.testing.assert_close(got, expected.mean(), atol=1e-5, rtol=1e-5)


def test_gbce_negatives_exclude_the_target_and_are_uniform() -> None:
    loss = GBCE(N_ITEMS, 2000, t=0.75)
    targets = torch.tensor([1, 7, N_ITEMS])
    neg = loss.sample(targets, torch.Generator().manual_seed(0))
    assert neg.shape == (3, 2000)
    assert (neg != targets[:, None]).all()
    assert neg.min() >= 1 and neg.max() <= N_ITEMS
    counts = torch.bincount(neg[1], minlength=N_ITEMS + 1)[1:]
    assert counts[6] == 0
    others = torch.cat([counts[:6], counts[7:]]).float()
    assert abs(others.mean().item() - 2000 / (N_ITEMS - 1)) < 1e-3
    assert others.min() > 20


@pytest.mark.parametrize(
    "cfg", [FullSoftmaxLoss(), SampledSoftmaxLoss(n_negatives=16), GBCELoss(n_negatives=8)]
)
def test_every_loss_backpropagates_finite_gradients(cfg: object, model: BERT4Rec) -> None:
    model.train()
    items = torch.tensor([[0, 0, 3, 41, 5], [6, 41, 8, 9, 41]])
    labels = torch.tensor([[0, 0, 0, 4, 0], [0, 7, 0, 0, 10]])
    positions = labels > 0
    loss_fn = build_loss(cfg, N_ITEMS, torch.ones(N_ITEMS + 2, dtype=torch.long))  # type: ignore[arg-type]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(model.hidden_at(items, positions), labels[positions], model, torch.Generator())
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.item_embedding.weight.grad is not None


ALL_LOSSES = [
    FullSoftmaxLoss(label_smoothing=0.1),
    SampledSoftmaxLoss(n_negatives=16),
    GBCELoss(n_negatives=50),
]


@pytest.mark.parametrize("cfg", ALL_LOSSES)
def test_blocked_loss_equals_unblocked(cfg: object, model: BERT4Rec, monkeypatch: pytest.MonkeyPatch) -> None:
    """Computing the loss in row blocks (to keep tensors small) gives the same value and gradients."""
    hidden, targets = batch(m=37)
    hidden.requires_grad_(True)
    loss_fn = build_loss(cfg, N_ITEMS, None)  # type: ignore[arg-type]

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        hidden.grad = None
        loss = loss_fn(hidden, targets, model, torch.Generator().manual_seed(4))
        loss.backward()
        assert hidden.grad is not None
        return loss.detach(), hidden.grad.clone()

    whole = run()
    monkeypatch.setattr(losses, "_BLOCK_BYTES", 1)
    monkeypatch.setattr(losses, "_MIN_BLOCK_ROWS", 5)  # 8 blocks, the last one short
    assert len(losses._row_blocks(37, 100)) == 8
    blocked = run()
    torch.testing.assert_close(blocked[0], whole[0])
    torch.testing.assert_close(blocked[1], whole[1])


@pytest.mark.parametrize("cfg", ALL_LOSSES)
def test_no_masked_position_gives_zero_loss_with_a_graph(cfg: object, model: BERT4Rec) -> None:
    hidden = torch.zeros(0, 16, requires_grad=True)
    loss = build_loss(cfg, N_ITEMS, None)(hidden, torch.zeros(0, dtype=torch.long), model)  # type: ignore[arg-type]
    assert loss.item() == 0.0
    loss.backward()
