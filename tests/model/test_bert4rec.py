"""BERT4Rec encoder: shapes, key-padding mask, positions, norms, output head, precision."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from recsys.config import ModelConfig
from recsys.model import blocks
from recsys.model.bert4rec import BERT4Rec
from recsys.model.blocks import _keep_mask, dropout
from tests.model.helpers import small_cfg

N_ITEMS = 30


def make_model(seed: int = 0, **overrides: object) -> BERT4Rec:
    torch.manual_seed(seed)
    return BERT4Rec(N_ITEMS, small_cfg(**overrides)).eval()


def test_shapes_and_vocab() -> None:
    model = make_model()
    assert model.vocab_size == N_ITEMS + 2 and model.mask_id == N_ITEMS + 1
    items = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 31]])
    h = model.encode(items)
    assert h.shape == (2, 5, 16)
    assert model.output_weight().shape == (N_ITEMS + 2, 16)
    bias = model.output_bias()
    assert bias is not None and bias.shape == (N_ITEMS + 2,)
    scores = model.score(h[:, -1])
    assert scores.shape == (2, N_ITEMS + 2)
    assert torch.isinf(scores[:, 0]).all() and torch.isinf(scores[:, -1]).all()
    assert torch.isfinite(scores[:, 1:-1]).all()
    assert torch.equal(model(items), h)


def test_init_is_bert_like() -> None:
    model = make_model()
    w = model.item_embedding.weight
    assert torch.equal(w[0], torch.zeros(16))  # padding row
    assert w.abs().max() <= 0.04 + 1e-6  # truncated at 2 std
    assert 0.01 < w[1:].std().item() < 0.02
    assert model.blocks[0].qkv.bias is not None and (model.blocks[0].qkv.bias == 0).all()


def test_padding_content_does_not_leak_into_real_positions() -> None:
    model = make_model()
    items = torch.tensor([[0, 0, 0, 7, 8, 9]])
    ref = model.encode(items)
    # Change what the PAD row embeds: real positions must not see it through attention.
    with torch.no_grad():
        model.item_embedding.weight[0].normal_()
    out = model.encode(items)
    torch.testing.assert_close(out[:, 3:], ref[:, 3:])


def test_left_padding_gives_same_prediction_as_unpadded() -> None:
    model = make_model()
    short = torch.tensor([[4, 5, 6]])
    padded = torch.tensor([[0, 0, 0, 0, 4, 5, 6]])
    torch.testing.assert_close(model.predict_next(short), model.predict_next(padded))
    torch.testing.assert_close(model.encode(short), model.encode(padded)[:, -3:])
    # ...and inside a batch whose other row is full-length.
    batch = torch.tensor([[0, 0, 0, 0, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]])
    torch.testing.assert_close(model.predict_next(batch)[:1], model.predict_next(short))


def test_all_padding_row_is_finite() -> None:
    model = make_model()
    items = torch.tensor([[0, 0, 0, 0], [0, 0, 2, 3]])
    assert torch.isfinite(model.encode(items)).all()
    model.train()
    positions = items > 0
    positions[0, -1] = True  # even a padding position's hidden state is finite
    h = model.hidden_at(items, positions)
    h.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)


def test_positions_count_back_from_the_end() -> None:
    model = make_model()
    with torch.no_grad():
        model.position_embedding.weight[:4].normal_()  # positions a length-4 input never uses
    items = torch.tensor([[1, 2, 3, 4]])
    before = make_model().encode(items)
    torch.testing.assert_close(model.encode(items), before)


def test_hidden_at_matches_encode() -> None:
    for norm_first in (False, True):
        model = make_model(norm_first=norm_first)
        items = torch.tensor([[0, 0, 5, 31, 7, 8], [1, 31, 3, 4, 31, 6]])
        positions = items == 31
        torch.testing.assert_close(model.hidden_at(items, positions), model.encode(items)[positions])


def test_predict_next_appends_mask_and_truncates() -> None:
    model = make_model()
    history = torch.tensor([[9, 1, 2, 3, 4, 5, 6, 7, 8, 9]])  # longer than max_len - 1 = 7
    expected_input = torch.tensor([[3, 4, 5, 6, 7, 8, 9, N_ITEMS + 1]])
    expected = model.score(model.encode(expected_input)[:, -1])
    torch.testing.assert_close(model.predict_next(history), expected)


def test_next_state_is_the_encoded_mask_position() -> None:
    """The user state (for embeddings) is the full encoder's output at the appended [MASK]."""
    model = make_model(norm_first=True)
    history = torch.tensor([[0, 0, 0, 3, 4], [9, 1, 2, 3, 4]])
    mask = torch.full((2, 1), N_ITEMS + 1)
    state = model.next_state(history)
    assert state.shape == (2, 16)
    torch.testing.assert_close(state, model.encode(torch.cat([history, mask], dim=1))[:, -1])


def test_predict_next_in_train_mode_uses_the_same_attention() -> None:
    """With (almost) no dropout, train-mode prediction (explicit attention path) equals eval mode."""
    model = make_model(dropout=0.0, attention_dropout=0.5)
    for block in model.blocks:
        block.p_attention = 1e-9  # exercise the explicit path, drop nothing
    history = torch.tensor([[0, 0, 3, 4, 5], [6, 7, 8, 9, 10]])
    expected = model.predict_next(history)
    torch.testing.assert_close(model.train().predict_next(history), expected)


def test_norm_placement_and_output_options() -> None:
    items = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    post = make_model(norm_first=False)
    pre = make_model(norm_first=True)
    assert isinstance(pre.final_norm, torch.nn.LayerNorm)
    assert not isinstance(post.final_norm, torch.nn.LayerNorm)
    assert not torch.allclose(post.encode(items), pre.encode(items))
    untied = make_model(tied_output=False, item_bias=False)
    assert untied.output_weight() is not untied.item_embedding.weight
    assert untied.output_bias() is None
    assert untied.predict_next(items).shape == (2, N_ITEMS + 2)
    tied = make_model()
    assert tied.output_weight() is tied.item_embedding.weight


def test_train_mode_dropout_is_random_and_eval_is_not() -> None:
    model = make_model(dropout=0.3, attention_dropout=0.3)
    items = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    torch.testing.assert_close(model.encode(items), model.encode(items))
    model.train()
    assert not torch.allclose(model.encode(items), model.encode(items))


@pytest.mark.parametrize("length", [6, 11])  # 11: keys padded to 16 for the CPU softmax, 6: not
@pytest.mark.parametrize("chunk_bytes", [8 * 2**20, 1])  # one block, or one sequence per block
def test_attention_dropout_path_matches_sdpa_without_dropout(
    chunk_bytes: int, length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The explicit attention used for training with dropout computes the same attention as SDPA."""
    monkeypatch.setattr(blocks, "_CHUNK_BYTES", chunk_bytes)
    model = make_model(dropout=0.0, attention_dropout=0.5, max_len=16)
    block = model.blocks[0]
    x = torch.randn(3, length, 16)
    padded = [False, False] + [True] * (length - 2)
    mask = torch.tensor([padded] * 2 + [[True] * length])[:, None, None, :]
    q, k, v = torch.randn(3, 3, 2, length, 8).unbind(0)
    # p -> 0 leaves no element dropped: compare the explicit path with SDPA directly.
    block.p_attention = 1e-9
    explicit = block._attention_with_dropout(q, k, v, mask)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(explicit, sdpa, atol=1e-5, rtol=1e-5)
    assert block.attention(x, mask).shape == x.shape


def test_keep_mask_rate_and_scale() -> None:
    torch.manual_seed(0)
    keep, scale = _keep_mask(torch.Size([1000, 1001]), 0.2, torch.empty(0))
    assert keep.shape == (1000, 1001) and keep.dtype == torch.float32
    assert set(keep.unique().tolist()) == {0.0, 1.0}
    assert abs(keep.mean().item() - 0.8) < 0.002
    assert math.isclose(scale, 1 / (1 - round(0.2 * 65536) / 65536))
    x = torch.ones(2000, 1000)
    assert abs(dropout(x, 0.2, True).mean().item() - 1.0) < 0.01  # inverted dropout keeps the mean
    assert dropout(x, 0.2, False) is x


def test_too_long_input_is_rejected() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="max_len"):
        model.encode(torch.ones(1, 9, dtype=torch.long))


def test_bf16_autocast_runs() -> None:
    model = make_model().train()
    items = torch.tensor([[0, 0, 1, 2, 31], [3, 4, 31, 6, 7]])
    positions = items == 31
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = model.hidden_at(items, positions)
        scores = model.score(h)
    assert scores.shape == (2, N_ITEMS + 2)
    scores[:, 1:-1].float().sum().backward()
    assert model.item_embedding.weight.grad is not None
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert torch.isfinite(model.predict_next(items)[:, 1:-1]).all()


class _LargestOutput(TorchDispatchMode):
    """Records the largest new tensor any aten op produces (views of the weights do not count)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_predict_next_with_huge_catalogue_scores_only_the_mask_position() -> None:
    """No op may produce a [B, L, V] tensor: the largest output is the [B, V] score matrix."""
    n_items = 1_000_000
    torch.manual_seed(0)
    model = BERT4Rec(
        n_items,
        ModelConfig(hidden_size=8, n_layers=1, n_heads=1, max_len=8, dropout=0.1, attention_dropout=0.1),
    ).eval()
    history = torch.randint(1, n_items + 1, (3, 20))
    with torch.no_grad(), _LargestOutput() as spy:
        scores = model.predict_next(history)
    assert scores.shape == (3, n_items + 2)
    assert torch.isfinite(scores[:, 1:-1]).all()
    assert spy.largest == 3 * (n_items + 2)


def test_training_path_scores_only_masked_positions() -> None:
    """hidden_at + score on M masked rows: nothing of size B * L * V is ever built."""
    n_items = 5000
    torch.manual_seed(0)
    model = BERT4Rec(n_items, small_cfg()).train()
    items = torch.randint(1, n_items + 1, (4, 8))
    positions = torch.zeros(4, 8, dtype=torch.bool)
    positions[:, -1] = True
    positions[0, 2] = True
    with _LargestOutput() as spy:
        scores = model.score(model.hidden_at(items, positions))
    assert scores.shape == (5, n_items + 2)
    assert spy.largest == 5 * (n_items + 2)


def test_sparse_item_gradients_equal_dense_ones() -> None:
    """Row-sparse item-table gradients hold exactly the dense gradient's nonzero rows."""
    items = torch.tensor([[0, 3, 4, 31], [5, 3, 31, 9]])
    positions = items == 31
    grads = []
    for sparse in (False, True):
        model = make_model().train()
        model.set_sparse_item_grad(sparse)
        h = model.hidden_at(items, positions)  # [2, d]
        w, b = model.output_rows(torch.tensor([[4, 7], [3, 12]]))
        assert b is not None
        ((h[:, None, :] * w).sum(-1) + b).square().sum().backward()
        grad = model.item_embedding.weight.grad
        assert grad is not None and grad.is_sparse == sparse
        grads.append(grad.to_dense() if sparse else grad)
    torch.testing.assert_close(grads[1], grads[0])
    assert set(grads[0].abs().sum(1).nonzero().flatten().tolist()) == {3, 4, 5, 7, 9, 12, 31}
