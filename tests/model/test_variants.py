"""The BERT-family options of the encoder (ALBERT, DeBERTa, stochastic depth) and ELECTRA's objective."""

from __future__ import annotations

import pytest
import torch

from recsys.config import ElectraConfig
from recsys.model.bert4rec import BERT4Rec, FeatureIndex
from recsys.model.electra import ReplacedItemDetection
from recsys.model.losses import FullSoftmax
from tests.model.helpers import small_cfg

N_ITEMS = 30
ITEMS = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 31], [7, 8, 9, 10, 11, 12]])


def make_model(seed: int = 0, **overrides: object) -> BERT4Rec:
    torch.manual_seed(seed)
    return BERT4Rec(N_ITEMS, small_cfg(**overrides)).eval()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "overrides",
    [
        {"embedding_size": 8},
        {"share_layers": True, "n_layers": 3},
        {"relative_attention": True, "relative_distance": 2},
        {"drop_path": 0.5},
        {"embedding_size": 8, "share_layers": True, "relative_attention": True, "drop_path": 0.3},
    ],
    ids=["factorised", "shared", "relative", "drop_path", "all"],
)
def test_every_path_agrees_with_the_full_encoder(overrides: dict[str, object]) -> None:
    """``hidden_at`` and ``next_state`` are shortcuts of ``encode``: the options must not break that."""
    model = make_model(**overrides)
    with torch.no_grad():
        full = model.encode(ITEMS)
        positions = ITEMS > 0
        assert torch.allclose(model.hidden_at(ITEMS, positions), full[positions], atol=1e-5)
        appended = torch.cat([ITEMS[:, -7:], torch.full((3, 1), model.mask_id)], dim=1)
        assert torch.allclose(model.next_state(ITEMS), model.encode(appended)[:, -1], atol=1e-5)
    model.train()
    model.hidden_at(ITEMS, positions).sum().backward()  # the training path, with dropout, runs too
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == ["item_bias"]  # scoring is the loss's job


def test_factorised_embedding_has_the_albert_shapes() -> None:
    plain, factorised = make_model(), make_model(embedding_size=4)
    assert factorised.item_embedding.weight.shape == (N_ITEMS + 2, 4)
    assert factorised.output_weight().shape == (N_ITEMS + 2, 4) and factorised.output_size == 4
    assert factorised.next_state(ITEMS).shape == (3, 4)
    assert factorised.predict_next(ITEMS).shape == (3, N_ITEMS + 2)
    # V x e + e x d (and a d -> e head) instead of V x d (and d -> d).
    v, d, e = N_ITEMS + 2, 16, 4
    saved = (v * d - (v * e + e * d)) + (d * d + d - (d * e + e)) + 2 * (d - e)
    assert n_params(plain) - n_params(factorised) == saved


def test_shared_layers_hold_one_block() -> None:
    shared = make_model(share_layers=True, n_layers=4)
    assert len(shared.blocks) == 1 and len(shared.layers) == 4
    assert all(layer is shared.blocks[0] for layer in shared.layers)
    assert n_params(make_model(n_layers=1)) == n_params(shared)
    state = shared.state_dict()  # each weight once (safetensors refuses aliased tensors)
    assert not any(key.startswith("blocks.1.") for key in state)


def test_relative_bias_is_deberta_c2p_plus_p2c() -> None:
    """Against a loop over (query, key) pairs of the formula in the docstring."""
    model = make_model(relative_attention=True, relative_distance=2)
    block = model.blocks[0]
    torch.manual_seed(1)
    B, nh, L, hs = 2, 2, 6, 8
    q, k = torch.randn(B, nh, L, hs), torch.randn(B, nh, L, hs)
    table = torch.randn(5, 16)
    with torch.no_grad():
        got = block.relative_bias(q, k, table)
        last = block.relative_bias(q[:, :, -1:], k, table)  # a last_only query
        assert block.pos_key is not None and block.pos_query is not None
        kr = block.pos_key(table).view(5, nh, hs)
        qr = block.pos_query(table).view(5, nh, hs)
    want = torch.zeros(B, nh, L, L)
    for i in range(L):
        for j in range(L):
            ahead, behind = max(-2, min(2, j - i)) + 2, max(-2, min(2, i - j)) + 2
            for h in range(nh):
                c2p = q[:, h, i] @ kr[ahead, h]
                p2c = k[:, h, j] @ qr[behind, h]
                want[:, h, i, j] = (c2p + p2c) / (3 * hs) ** 0.5
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(last, want[:, :, -1:], atol=1e-5)


def test_relative_attention_sees_order_without_absolute_positions() -> None:
    """With the absolute position table zeroed, only the relative terms can tell two orders apart."""
    plain, relative = make_model(relative_attention=False), make_model(relative_attention=True)
    with torch.no_grad():
        for model in (plain, relative):
            model.position_embedding.weight.zero_()
        for block in relative.blocks:
            for projection in (block.pos_key, block.pos_query):  # as after training: not near zero
                assert projection is not None
                projection.weight.normal_(0.0, 0.5)
    forward, backward = torch.tensor([[3, 4, 5, 6]]), torch.tensor([[6, 5, 4, 3]])
    with torch.no_grad():
        plain_gap = (plain.next_state(forward) - plain.next_state(backward)).abs().max()
        relative_gap = (relative.next_state(forward) - relative.next_state(backward)).abs().max()
    assert plain_gap < 1e-5 and relative_gap > 1e-4  # measured: 2e-7 and 5e-4


def test_stochastic_depth_drops_whole_sequences_in_training_only() -> None:
    dropped, plain = make_model(drop_path=0.9, n_layers=2), make_model(n_layers=2)
    plain.load_state_dict(dropped.state_dict())
    with torch.no_grad():
        assert torch.equal(dropped.encode(ITEMS), plain.encode(ITEMS))  # eval: every block runs
    dropped.train()
    torch.manual_seed(0)
    scales = [dropped._depth_scale(1, 1000, torch.zeros(1)) for _ in range(3)]
    for scale in scales:
        assert scale is not None
        kept = scale > 0
        assert abs(float(kept.float().mean()) - 0.1) < 0.05  # the last block: drop_path itself
        assert torch.allclose(scale[kept], torch.tensor(1 / 0.1))  # kept ones rescaled: unbiased
    first = dropped._depth_scale(0, 1000, torch.zeros(1))
    assert first is not None and abs(float((first > 0).float().mean()) - 0.55) < 0.06  # 1/2 of 0.9


def test_electra_generator_shares_the_item_table_and_both_losses_train() -> None:
    model = make_model().train()
    electra = ReplacedItemDetection(model, ElectraConfig(enabled=True, generator_hidden=8))
    assert electra.generator.item_embedding.weight is model.item_embedding.weight
    assert electra.generator.cfg.hidden_size == 8 and electra.generator.output_size == 16
    items = ITEMS.clamp(max=N_ITEMS)  # real items only
    selected = torch.zeros_like(items, dtype=torch.bool)
    selected[:, -2:] = True
    inputs = items.masked_fill(selected, model.mask_id)
    gen = torch.Generator().manual_seed(0)
    g_loss, d_loss, share = electra(model, items, inputs, selected, FullSoftmax(N_ITEMS), gen)
    (g_loss + d_loss).backward()
    assert torch.isfinite(g_loss) and torch.isfinite(d_loss)
    assert 0.0 < float(share) <= 6 / 16  # only the 6 masked of 16 real positions can be replaced
    assert model.item_embedding.weight.grad is not None
    assert electra.head.weight.grad is not None and model.blocks[0].qkv.weight.grad is not None


def test_electra_samples_from_the_generator_distribution() -> None:
    model = make_model()
    electra = ReplacedItemDetection(model, ElectraConfig(enabled=True, generator_hidden=8))
    with torch.no_grad():
        electra.generator.item_bias.fill_(-1e4)  # type: ignore[union-attr]
        electra.generator.item_bias[7] = 1e4  # type: ignore[index]
    hidden = torch.randn(50, 16)
    draws = electra.sample(hidden, torch.Generator().manual_seed(0))
    assert draws.shape == (50,) and bool((draws == 7).all())


@pytest.mark.parametrize("padded", [False, True])
def test_relative_attention_dropout_path_matches_sdpa(padded: bool) -> None:
    """The CPU training path (explicit weights + dropout) adds the relative bias as SDPA does."""
    model = make_model(relative_attention=True, relative_distance=3)
    block = model.blocks[0]
    q, k, v = torch.randn(3, 3, 2, 7, 8).unbind(0)
    bias = block.relative_bias(q, k, torch.randn(7, 16)).detach()
    if padded:
        keep = torch.tensor([[False, False] + [True] * 5] * 3)[:, None, None, :]
        bias = bias.masked_fill(~keep, float("-inf"))
    block.p_attention = 1e-9  # nothing dropped: the two paths must agree
    explicit = block._attention_with_dropout(q, k, v, bias, scale=24**-0.5)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=24**-0.5)
    assert torch.allclose(explicit, reference, atol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_relative_attention_in_chunks_matches_one_pass(
    training: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU path builds the bias a few sequences at a time; the result (and the gradient) is the
    whole-batch bias with masked keys at -inf, through SDPA."""
    from recsys.model import blocks

    model = make_model(relative_attention=True, relative_distance=3)
    block = model.blocks[0].train(training)
    block.p_attention = 1e-9 if training else block.p_attention  # nothing dropped: comparable to SDPA
    table = torch.randn(7, 16)
    q, k, v = torch.randn(3, 5, 2, 9, 8).unbind(0)
    keep = torch.ones(5, 1, 1, 9, dtype=torch.bool)
    keep[1, ..., :4] = keep[3, ..., :1] = False  # left padding of two sequences
    for t in (q, k, v):
        t.requires_grad_(True)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=block.relative_bias(q, k, table).masked_fill(~keep, float("-inf")), scale=24**-0.5
    )
    want_grads = torch.autograd.grad(want.square().sum(), (q, k, v))
    monkeypatch.setattr(blocks, "_CHUNK_BYTES", 2 * 9 * 9 * 4 * 2)  # two sequences per chunk: 3 chunks
    got = block._relative_attention(q, k, v, keep, table)
    got_grads = torch.autograd.grad(got.square().sum(), (q, k, v))
    assert torch.allclose(got, want, atol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert torch.allclose(g, w, atol=1e-4)


# ------------------------------------------------------------------------------------ side features
def _features(rows: dict[int, list[int]], n_features: int = 4) -> FeatureIndex:
    """A feature index over the ``N_ITEMS + 2`` vocabulary rows from ``{row: [feature, ...]}``."""
    counts = [len(rows.get(r, [])) for r in range(N_ITEMS + 2)]
    offsets = torch.tensor([0, *counts]).cumsum(0)
    index = torch.tensor([f for r in range(N_ITEMS + 2) for f in rows.get(r, [])], dtype=torch.long)
    return FeatureIndex(offsets, index, n_features)


def test_item_rows_add_the_mean_of_their_features() -> None:
    torch.manual_seed(0)
    model = BERT4Rec(N_ITEMS, small_cfg(), _features({3: [0, 2], 4: [1]})).eval()
    assert model.feature_embedding is not None
    table, features = model.item_table(), model.feature_embedding.weight
    own = model.item_embedding.weight
    torch.testing.assert_close(table[3], own[3] + (features[0] + features[2]) / 2)
    torch.testing.assert_close(table[4], own[4] + features[1])
    torch.testing.assert_close(table[5], own[5])  # no features: the item's own row
    assert torch.equal(table[0], torch.zeros_like(table[0]))  # PAD stays zero
    assert torch.equal(model.output_weight(), table)  # tied: scored against the same rows
    # The encoder reads the same rows: with every feature row zeroed, the model is the plain one.
    plain = BERT4Rec(N_ITEMS, small_cfg()).eval()
    plain.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("feature")}, strict=True
    )
    with torch.no_grad():
        model.feature_embedding.weight.zero_()
        torch.testing.assert_close(model.predict_next(ITEMS), plain.predict_next(ITEMS))


def test_feature_rows_learn_and_untied_outputs_share_them() -> None:
    torch.manual_seed(0)
    model = BERT4Rec(N_ITEMS, small_cfg(tied_output=False), _features({3: [0], 9: [0, 1]})).train()
    assert model.feature_embedding is not None and model.output_embedding is not None
    pooled = model.output_weight() - model.output_embedding
    torch.testing.assert_close(pooled[3], model.feature_embedding.weight[0])
    positions = (ITEMS > 0) & (ITEMS <= N_ITEMS)
    loss = FullSoftmax(N_ITEMS)(model.hidden_at(ITEMS, positions), ITEMS[positions], model)
    loss.backward()
    grad = model.feature_embedding.weight.grad
    assert grad is not None and grad[:2].abs().sum() > 0  # features of scored items learn
    assert grad[2:].abs().sum() == 0  # features no item has get no gradient
    with pytest.raises(ValueError, match="do not combine with item side features"):
        model.set_sparse_item_grad(True)


def test_feature_offsets_must_cover_the_vocabulary() -> None:
    bad = FeatureIndex(torch.zeros(N_ITEMS + 2, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"feature offsets have shape \(32,\), expected \(33,\)"):
        BERT4Rec(N_ITEMS, small_cfg(), bad)
