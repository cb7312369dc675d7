"""recsys.inference.similar: cosine neighbours of the output item embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ModelConfig
from recsys.inference.similar import item_vectors, similar_items
from recsys.model.bert4rec import BERT4Rec

N_ITEMS = 11


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def model(request: pytest.FixtureRequest) -> BERT4Rec:
    torch.manual_seed(3)
    cfg = ModelConfig(
        hidden_size=8,
        n_layers=1,
        n_heads=2,
        max_len=4,
        tied_output=request.param,
        dropout=0.1,
        attention_dropout=0.1,
    )
    return BERT4Rec(N_ITEMS, cfg).eval()


def neighbours(model: BERT4Rec, k: int, batch_size: int) -> dict[int, list[tuple[int, float]]]:
    out = {}
    for top in similar_items(model, k, batch_size=batch_size):
        for item, items, scores in zip(top.users, top.items, top.scores, strict=True):
            out[int(item)] = [(int(i), float(s)) for i, s in zip(items, scores, strict=True) if i]
    return out


@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_matches_brute_force_cosine_and_excludes_self(model: BERT4Rec, batch_size: int) -> None:
    weight = model.output_weight().detach()[1 : N_ITEMS + 1].double()
    unit = weight / weight.norm(dim=1, keepdim=True)
    cos = (unit @ unit.T).numpy()
    got = neighbours(model, 4, batch_size)
    assert sorted(got) == list(range(1, N_ITEMS + 1))
    for item, recs in got.items():
        assert item not in [i for i, _ in recs]
        others = [j for j in range(N_ITEMS) if j != item - 1]
        want = sorted(others, key=lambda j: (-cos[item - 1, j], j))[:4]
        assert [i for i, _ in recs] == [j + 1 for j in want]
        np.testing.assert_allclose([s for _, s in recs], cos[item - 1, want], atol=1e-5)


def test_scores_are_symmetric(model: BERT4Rec) -> None:
    got = neighbours(model, N_ITEMS - 1, 3)  # every other item: every pair appears both ways
    for a, recs in got.items():
        for b, score in recs:
            back = dict(got[b])[a]
            assert score == pytest.approx(back, abs=1e-6)


def test_k_larger_than_catalogue_and_unit_vectors(model: BERT4Rec) -> None:
    got = neighbours(model, N_ITEMS + 5, 4)
    assert all(len(recs) == N_ITEMS - 1 for recs in got.values())
    norms = item_vectors(model).norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
    with pytest.raises(ValueError, match="k must be >= 1"):
        next(similar_items(model, 0))
