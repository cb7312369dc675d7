"""RowSparseAdamW: AdamW on dense gradients, lazy AdamW rows on sparse ones; sparse-aware clipping."""

from __future__ import annotations

import pytest
import torch

from recsys.training.optim import RowSparseAdamW, clip_grad_norm_

ROWS = torch.tensor([1, 2, 4, 6])  # rows 0, 3, 5 never get a gradient


def _pair(
    weight_decay: float,
) -> tuple[torch.nn.Parameter, torch.nn.Parameter, RowSparseAdamW, torch.optim.AdamW]:
    torch.manual_seed(0)
    sparse = torch.nn.Parameter(torch.randn(7, 3))
    dense = torch.nn.Parameter(sparse.detach().clone())
    lazy = RowSparseAdamW([sparse], lr=0.1, betas=(0.9, 0.98), weight_decay=weight_decay)
    return (
        sparse,
        dense,
        lazy,
        torch.optim.AdamW([dense], lr=0.1, betas=(0.9, 0.98), weight_decay=weight_decay),
    )


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sparse_rows_follow_adamw_and_absent_rows_stay(weight_decay: float) -> None:
    sparse, dense, lazy, reference = _pair(weight_decay)
    start = sparse.detach().clone()
    for step in range(3):
        grad = torch.randn(7, 3, generator=torch.Generator().manual_seed(step))
        grad[[0, 3, 5]] = 0.0
        # Duplicate entries of a row must be summed: split row 2's gradient over two entries.
        idx = torch.cat([ROWS, torch.tensor([2])])
        values = torch.cat([grad[ROWS], torch.zeros(1, 3)])
        values[1], values[-1] = grad[2] / 2, grad[2] / 2
        sparse.grad = torch.sparse_coo_tensor(idx[None], values, (7, 3))
        dense.grad = grad
        lazy.step()
        reference.step()
        # With one gradient so far, every row with a gradient moved exactly as under AdamW.
        torch.testing.assert_close(sparse[ROWS], dense[ROWS], atol=1e-6, rtol=1e-6)
        assert torch.equal(sparse[[0, 3, 5]], start[[0, 3, 5]])  # lazy: no gradient, no move
    assert sparse.grad is not None and sparse.grad.is_sparse  # gradients are left in place
    state = lazy.state[sparse]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"} and float(state["step"]) == 3.0


def test_dense_gradients_are_plain_adamw() -> None:
    torch.manual_seed(1)
    a = torch.nn.Parameter(torch.randn(5, 4))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = RowSparseAdamW([a], lr=0.05, weight_decay=0.01)
    opt_b = torch.optim.AdamW([b], lr=0.05, weight_decay=0.01)
    for step in range(3):
        grad = torch.randn(5, 4, generator=torch.Generator().manual_seed(step))
        a.grad, b.grad = grad.clone(), grad.clone()
        opt_a.step()
        opt_b.step()
    torch.testing.assert_close(a, b)


def test_closure_runs_first_and_its_loss_is_returned() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    opt = RowSparseAdamW([w], lr=0.1)

    def closure() -> torch.Tensor:
        loss = (w * 2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 6.0
    assert (w < 1).all()


def test_clip_grad_norm_counts_a_sparse_gradient_as_its_dense_self() -> None:
    dense = torch.nn.Parameter(torch.zeros(2))
    table = torch.nn.Parameter(torch.zeros(6, 2))
    dense.grad = torch.tensor([3.0, 0.0])
    # Row 1 appears twice (uncoalesced): its gradient is (2, 2) + (1, 2) = (3, 4).
    table.grad = torch.sparse_coo_tensor(
        torch.tensor([[1, 4, 1]]), torch.tensor([[2.0, 2.0], [0.0, 12.0], [1.0, 2.0]]), (6, 2)
    )
    expected = torch.cat([dense.grad, table.grad.to_dense().flatten()]).norm()  # sqrt(9 + 25 + 144) = 13.34
    total = clip_grad_norm_([dense, table], max_norm=1.0)
    torch.testing.assert_close(total, expected)
    clipped = torch.cat([dense.grad, table.grad.to_dense().flatten()]).norm()
    torch.testing.assert_close(clipped, torch.tensor(1.0), atol=1e-4, rtol=1e-4)
    assert torch.equal(
        torch.nn.utils.clip_grad_norm_([dense], max_norm=10.0), dense.grad.norm()
    )  # below: kept


def test_amsgrad_is_refused() -> None:
    with pytest.raises(ValueError, match="amsgrad"):
        RowSparseAdamW([torch.nn.Parameter(torch.ones(1))], amsgrad=True)
