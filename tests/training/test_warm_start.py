"""Warm start from a bundle (``train.init_from``): carried item rows, new items, fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recsys.evaluation.protocol import evaluate
from recsys.inference.recommender import Recommender
from recsys.model.bert4rec import BERT4Rec
from recsys.training.bundle import BundleError, load_bundle
from recsys.training.features import load_features
from recsys.training.fit import MONITOR, fit
from recsys.training.warm_start import warm_start
from tests.training.helpers import planted_rule_log, prepared, tiny_config


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("pretrained")
    cfg = tiny_config(tmp, planted_rule_log(tmp / "log.csv"), **{"train.max_epochs": 60})
    data = prepared(cfg)
    result = fit(cfg, data)
    return cfg, data, result


def test_warm_start_keeps_old_items_scores_and_adds_new_ones(pretrained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, data, result = pretrained
    # Tomorrow's log: more users, five new items (41..45), the same old ones.
    new_cfg = tiny_config(tmp_path, planted_rule_log(tmp_path / "log.csv", n_users=300, n_items=45, seed=3))
    new_data = prepared(new_cfg)
    assert new_data.n_items == 45 and len(new_data.users) > len(data.users)
    model = BERT4Rec(new_data.n_items, new_cfg.model)
    carried = warm_start(model, new_data.items, result.bundle_path)
    assert carried["items_carried"] == 40 and carried["items_new"] == 5 and carried["items_dropped"] == 0

    old = load_bundle(result.bundle_path).model
    model.eval()
    history_ids = [7, 8, 9, 10]
    old_history = torch.tensor([data.items.lookup(history_ids).tolist()])
    new_history = torch.tensor([new_data.items.lookup(history_ids).tolist()])
    with torch.inference_mode():
        old_scores = old.predict_next(old_history)[0]
        new_scores = model.predict_next(new_history)[0]
    old_ids = list(range(1, 41))
    assert torch.allclose(
        new_scores[new_data.items.lookup(old_ids)], old_scores[data.items.lookup(old_ids)], atol=1e-6
    )
    new_items = new_data.items.lookup([41, 42, 43, 44, 45])
    assert torch.isfinite(new_scores[new_items]).all()
    # A new item starts from the fresh initialisation, never from some old item's row.
    assert not torch.equal(model.item_embedding.weight[new_items[0]], old.item_embedding.weight[41 - 40])


def test_warm_start_refuses_another_architecture(pretrained) -> None:  # type: ignore[no-untyped-def]
    cfg, data, result = pretrained
    wider = BERT4Rec(data.n_items, cfg.model.model_copy(update={"hidden_size": 64}))
    with pytest.raises(BundleError, match=r"weight .* is \(.*\) in the bundle"):
        warm_start(wider, data.items, result.bundle_path)
    deeper = BERT4Rec(data.n_items, cfg.model.model_copy(update={"n_layers": 2}))
    with pytest.raises(BundleError, match="architecture"):
        warm_start(deeper, data.items, result.bundle_path)


@pytest.mark.slow
def test_pretrain_then_next_item_fine_tune(pretrained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The second stage: only the appended [MASK] predicted, from the masked-item bundle. Five epochs
    keep the rule; the same five from scratch do not learn it."""
    cfg, data, result = pretrained
    source = Path(cfg.data.source.path)
    stage = {"masking.last_item_prob": 1.0, "train.max_epochs": 5}
    tuned_cfg = tiny_config(tmp_path / "tuned", source, **stage, **{"train.init_from": result.bundle_path})
    tuned = fit(tuned_cfg, prepared(tuned_cfg))
    scratch_cfg = tiny_config(tmp_path / "scratch", source, **stage)
    scratch = fit(scratch_cfg, prepared(scratch_cfg), write_bundle=False)
    assert tuned.derived["train.init_from.items_carried"] == 40
    hr1 = evaluate(
        Recommender(tuned.module.model, data.users, data.items),
        data.history("test"),
        data.targets("test"),
        ks=[1],
        n_items=data.n_items,
        max_history=15,
    ).metrics["hr@1"]
    assert hr1 >= 0.9
    assert tuned.best_val[MONITOR] >= 0.9 > scratch.best_val[MONITOR] + 0.3


def test_warm_start_matches_feature_rows_by_feature_id(tmp_path: Path) -> None:
    def feature_file(path: Path, names: dict[int, str]) -> Path:
        path.write_text(json.dumps({str(i): [names.get(i, f"cat{i % 3}")] for i in range(1, 46)}))
        return path

    old_cfg = tiny_config(
        tmp_path / "old",
        planted_rule_log(tmp_path / "old.csv"),
        **{"train.max_epochs": 3, "data.item_features.path": str(feature_file(tmp_path / "old.json", {}))},
    )
    old = fit(old_cfg, prepared(old_cfg))
    # Tomorrow: five new items, one of them in a category nobody had ("new").
    new_features = feature_file(tmp_path / "new.json", {41: "new"})
    new_cfg = tiny_config(
        tmp_path / "new",
        planted_rule_log(tmp_path / "new.csv", n_users=300, n_items=45, seed=3),
        **{"train.max_epochs": 3, "data.item_features.path": str(new_features)},
    )
    new_data = prepared(new_cfg)
    features = load_features(new_cfg.data, new_data.items)
    assert features is not None and features.vocabulary.ids.to_list() == ["cat0", "cat1", "cat2", "new"]
    model = BERT4Rec(new_data.n_items, new_cfg.model, features.index)
    fresh = model.feature_embedding.weight.detach().clone()  # type: ignore[union-attr]
    carried = warm_start(model, new_data.items, old.bundle_path, features.vocabulary)
    assert carried["features_carried"] == 3 and carried["items_carried"] == 40
    trained = load_bundle(old.bundle_path).model
    assert torch.equal(model.feature_embedding.weight[:3], trained.feature_embedding.weight)  # type: ignore[union-attr]
    assert torch.equal(model.feature_embedding.weight[3], fresh[3])  # type: ignore[union-attr]
    # Today's index: item 41 reads the "new" row.
    row = int(new_data.items.lookup([41])[0])
    assert model.feature_index[model.feature_offsets[row]].item() == 3
    # Warm starting a model with features from a bundle without them (or back) is an architecture change.
    with pytest.raises(BundleError, match="does not have this config's architecture"):
        warm_start(BERT4Rec(new_data.n_items, new_cfg.model), new_data.items, old.bundle_path)
