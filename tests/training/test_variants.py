"""The BERT-family options: each trains the planted rule through ``fit`` and round-trips the bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recsys.config import OptimizerConfig
from recsys.evaluation.protocol import evaluate
from recsys.inference.recommender import Recommender
from recsys.training.auto import ITEM_DECAY_WITH_FEATURES
from recsys.training.bundle import load_bundle
from recsys.training.fit import MONITOR, fit
from tests.training.helpers import planted_rule_log, prepared, tiny_config

VARIANTS = {
    "albert_factorised_embedding": {"model.embedding_size": 16},
    "albert_shared_layers": {"model.n_layers": 2, "model.share_layers": "true"},
    "deberta_relative_attention": {"model.relative_attention": "true", "model.relative_distance": 4},
    "stochastic_depth": {"model.n_layers": 2, "model.drop_path": 0.2},
    "electra": {"model.electra.enabled": "true", "model.electra.generator_hidden": 16},
    "roberta_lr_scaling": {
        "train.batch_size": 64,
        "train.optimizer.lr": 0.005,
        "train.optimizer.lr_scaling": "linear",
        "train.optimizer.lr_reference_batch": 32,
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_learns_the_planted_rule_and_round_trips(tmp_path: Path, name: str) -> None:
    cfg = tiny_config(
        tmp_path,
        planted_rule_log(tmp_path / "log.csv"),
        **{"train.max_epochs": 60, "train.patience": 60, **VARIANTS[name]},
    )
    data = prepared(cfg)
    result = fit(cfg, data)
    metrics = evaluate(
        Recommender(result.module.model, data.users, data.items),
        data.history("test"),
        data.targets("test"),
        ks=[1],
        n_items=data.n_items,
        max_history=cfg.model.resolved_max_len() - 1,
    ).metrics
    assert metrics["hr@1"] >= 0.9, (name, metrics)
    assert result.best_val[MONITOR] >= 0.9
    assert result.bundle_path is not None
    bundle = load_bundle(result.bundle_path)
    history = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    with torch.inference_mode():
        expected = result.module.model.eval().predict_next(history)
        assert torch.equal(expected, bundle.model.predict_next(history))
    assert bundle.config.model == result.config.model
    if name == "roberta_lr_scaling":  # 0.005 x 64 / 32, what the optimiser started from
        optimizer = result.module.optimizers(use_pl_optimizer=False)
        assert isinstance(optimizer, torch.optim.Optimizer)
        assert result.derived["train.optimizer.lr_used"] == optimizer.param_groups[0]["initial_lr"] == 0.01


def test_lr_scaling_follows_the_global_batch() -> None:
    def lr(scaling: str, batch: int) -> float:
        opt = OptimizerConfig.model_validate({"lr": 1e-3, "lr_scaling": scaling, "lr_reference_batch": 128})
        return opt.scaled_lr(batch)

    assert lr("none", 512) == 1e-3
    assert lr("sqrt", 512) == pytest.approx(2e-3) and lr("linear", 512) == pytest.approx(4e-3)
    assert lr("linear", 64) == pytest.approx(5e-4)


@pytest.mark.parametrize("tied", [True, False])
def test_item_weight_decay_puts_the_item_tables_in_their_own_group(tmp_path: Path, tied: bool) -> None:
    from recsys.training.module import BERT4RecModule

    def groups(**overrides: object) -> list[tuple[float, set[str]]]:
        cfg = tiny_config(
            tmp_path, tmp_path / "log.csv", **{"model.tied_output": str(tied).lower(), **overrides}
        )
        module = BERT4RecModule(20, cfg)
        names = {id(p): n for n, p in module.named_parameters()}
        optimizer = module.configure_optimizers()["optimizer"]
        return [(g["weight_decay"], {names[id(p)] for p in g["params"]}) for g in optimizer.param_groups]

    tables = {"model.item_embedding.weight"} | (set() if tied else {"model.output_embedding"})
    default = groups(**{"train.optimizer.item_weight_decay": "null"})
    assert all(not (tables & names) for decay, names in default if decay > 0)  # excluded, as before
    split = groups(**{"train.optimizer.item_weight_decay": 0.3, "train.optimizer.weight_decay": 0.01})
    assert (0.3, tables) in split
    others = set().union(*(names for decay, names in split if decay != 0.3))
    assert not (tables & others) and "model.position_embedding.weight" in others
    with pytest.raises(ValueError, match="item_weight_decay is 'auto': resolve it"):
        groups()  # auto needs the data: fit resolves it (recsys.training.auto)


def _feature_file(path: Path, n_items: int = 40, extra: dict[str, list[str]] | None = None) -> Path:
    """Each planted-rule item in one of four categories, and one feature every item shares."""
    features = {str(i): [f"cat{i % 4}", "all"] for i in range(1, n_items + 1)}
    path.write_text(json.dumps({**features, **(extra or {})}), encoding="utf-8")
    return path


@pytest.mark.slow
def test_item_features_learn_the_planted_rule_and_round_trip(tmp_path: Path) -> None:
    features = _feature_file(tmp_path / "item2attributes.json", extra={"999": ["unseen"]})
    cfg = tiny_config(
        tmp_path,
        planted_rule_log(tmp_path / "log.csv"),
        **{"train.max_epochs": 60, "train.patience": 60, "data.item_features.path": str(features)},
    )
    data = prepared(cfg)
    result = fit(cfg, data)
    assert result.derived["data.item_features.features"] == 5  # cat0..cat3 and all ("unseen": item 999)
    assert result.derived["data.item_features.items_listed_not_in_data"] == 1
    # item_weight_decay: auto decays the items' own rows when they have features to lean on.
    assert result.derived["train.optimizer.item_weight_decay"] == ITEM_DECAY_WITH_FEATURES
    assert result.config.train.optimizer.item_weight_decay == ITEM_DECAY_WITH_FEATURES
    assert result.best_val[MONITOR] >= 0.9
    assert result.bundle_path is not None
    bundle = load_bundle(result.bundle_path)
    assert bundle.features is not None and bundle.features.ids.to_list() == [
        "all",
        "cat0",
        "cat1",
        "cat2",
        "cat3",
    ]
    assert bundle.manifest["item_features"] == {"n_features": 5, "nnz": 80}
    history = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    with torch.inference_mode():
        assert torch.equal(
            result.module.model.eval().predict_next(history), bundle.model.predict_next(history)
        )
    # The bundle is self-contained: it scores with its saved index, whatever the file says today.
    features.write_text("{}", encoding="utf-8")
    assert torch.equal(load_bundle(result.bundle_path).model.item_table(), bundle.model.item_table())
