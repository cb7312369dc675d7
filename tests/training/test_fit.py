"""End-to-end training on tiny data: learning, determinism, bundle round trip, tampering."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as L
import torch

from recsys.evaluation.baselines import MostPopular
from recsys.evaluation.protocol import evaluate
from recsys.inference.recommender import Recommender
from recsys.training.bundle import BundleError, load_bundle
from recsys.training.fit import MONITOR, export_checkpoint, fit
from tests.training.helpers import planted_rule_log, prepared, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("planted")
    cfg = tiny_config(
        tmp, planted_rule_log(tmp / "log.csv"), **{"train.max_epochs": 60, "train.patience": 60}
    )
    data = prepared(cfg)
    return cfg, data, fit(cfg, data)


def test_planted_next_item_rule_is_learned(trained) -> None:  # type: ignore[no-untyped-def]
    cfg, data, result = trained
    model_eval = evaluate(
        Recommender(result.module.model, data.users, data.items),
        data.history("test"),
        data.targets("test"),
        ks=[1, 10],
        n_items=data.n_items,
        max_history=cfg.model.max_len - 1,
    )
    popular = evaluate(
        MostPopular(data.item_counts(), data.n_items),
        data.history("test"),
        data.targets("test"),
        ks=[1],
        n_items=data.n_items,
    )
    assert model_eval.metrics["hr@1"] >= 0.95
    assert popular.metrics["hr@1"] < 0.3
    assert result.best_val[MONITOR] >= 0.95
    assert [r["epoch"] for r in result.history] == list(range(1, len(result.history) + 1))
    assert all("train_loss" in r and "epoch_tokens_per_s" in r for r in result.history)


def test_bundle_round_trip_scores_exactly(trained) -> None:  # type: ignore[no-untyped-def]
    _, data, result = trained
    bundle = load_bundle(result.bundle_path)
    history = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    model = result.module.model.eval()
    with torch.inference_mode():
        assert torch.equal(model.predict_next(history), bundle.model.predict_next(history))
    assert bundle.items == data.items and bundle.users == data.users
    assert bundle.n_items == data.n_items


@pytest.mark.parametrize("damage", ["flip", "truncate", "drop_manifest", "drop_weights"])
def test_tampered_bundle_is_refused(trained, tmp_path: Path, damage: str) -> None:  # type: ignore[no-untyped-def]
    import shutil

    _, _, result = trained
    copy = tmp_path / "bundle"
    shutil.copytree(result.bundle_path, copy)
    weights = copy / "weights.safetensors"
    if damage == "flip":
        raw = bytearray(weights.read_bytes())
        raw[-10] ^= 0xFF
        weights.write_bytes(bytes(raw))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "drop_manifest":
        (copy / "manifest.json").unlink()
    else:
        weights.unlink()
    with pytest.raises(BundleError, match=r"weights.safetensors|manifest"):
        load_bundle(copy)


def test_seeded_runs_are_identical(tmp_path: Path) -> None:
    source = planted_rule_log(tmp_path / "log.csv", n_users=40)
    runs = []
    for name in ("a", "b"):
        cfg = tiny_config(tmp_path / name, source, **{"train.max_epochs": 3, "model.dropout": 0.1})
        runs.append(fit(cfg, prepared(cfg), write_bundle=False))
    a, b = runs
    assert [r[MONITOR] for r in a.history] == [r[MONITOR] for r in b.history]
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    for (ka, va), (kb, vb) in zip(a.module.state_dict().items(), b.module.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


class _Worsening(L.Callback):
    """Makes the monitored metric fall every epoch (after EpochHistory recorded the real one), so the
    first epoch stays the best and every later epoch is a non-improving one."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.callback_metrics[MONITOR] = torch.tensor(1.0 / (trainer.current_epoch + 1))


def test_last_checkpoint_is_the_last_epoch_even_without_improvement(tmp_path: Path) -> None:
    source = planted_rule_log(tmp_path / "log.csv", n_users=40)
    cfg = tiny_config(tmp_path, source, **{"train.max_epochs": 3})
    fit(cfg, prepared(cfg), callbacks=[_Worsening()], write_bundle=False)
    checkpoints = Path(cfg.train.output_dir) / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(checkpoints / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0
    assert last["epoch"] == 2  # what --resume continues from: the end of the run, not the best epoch
    (records,) = [v["records"] for v in last["callbacks"].values() if "records" in v]
    assert len(records) == 3


def test_ema_weights_are_validated_checkpointed_and_shipped(tmp_path: Path) -> None:
    source = planted_rule_log(tmp_path / "log.csv", n_users=40)
    cfg = tiny_config(tmp_path, source, **{"train.max_epochs": 3, "train.ema_decay": 0.9})
    data = prepared(cfg)
    result = fit(cfg, data)
    assert result.bundle_path is not None
    checkpoints = Path(cfg.train.output_dir) / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    raw, averaged = last["current_model_state"], last["state_dict"]  # raw weights kept for --resume
    assert raw.keys() == averaged.keys()
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)
    # The shipped model is the averaged best checkpoint...
    best = torch.load(checkpoints / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    bundle = load_bundle(result.bundle_path)
    for name, value in bundle.model.state_dict().items():
        assert torch.equal(value, best[f"model.{name}"]), name
    # ...and validation scored those weights: re-scoring it reproduces the recorded best metric.
    rescored = evaluate(
        Recommender.load(bundle),
        result.data.val_history,
        result.data.val_targets,
        ks=[10],
        n_items=data.n_items,
        max_history=cfg.model.max_len - 1,
    )
    assert rescored.metrics["ndcg@10"] == pytest.approx(result.best_val[MONITOR], abs=1e-6)


def test_exported_best_checkpoint_is_the_shipped_bundle(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, data, result = trained
    exported = load_bundle(export_checkpoint(cfg, data, result.best_checkpoint, tmp_path / "exported"))
    shipped = load_bundle(result.bundle_path)
    for (name, a), (_, b) in zip(
        exported.model.state_dict().items(), shipped.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_sampled_softmax_trains_with_sparse_item_gradients(tmp_path: Path) -> None:
    """Through Lightning: row-sparse item-table gradients, their clipping and the lazy AdamW rows."""
    cfg = tiny_config(
        tmp_path,
        planted_rule_log(tmp_path / "log.csv"),
        **{
            "loss.kind": "sampled_softmax",
            "loss.n_negatives": 16,
            "train.max_epochs": 30,
            "train.optimizer.grad_clip": 0.5,
        },
    )
    result = fit(cfg, prepared(cfg), write_bundle=False)
    model = result.module.model
    assert model.sparse_item_grad and model.item_embedding.sparse
    optimizer = result.module.optimizers(use_pl_optimizer=False)
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert float(optimizer.state[model.item_embedding.weight]["step"]) > 0
    # The planted rule, from 16 negatives out of 40 items (measured: 0.83; dense AdamW 0.87; random 0.11).
    assert result.best_val[MONITOR] >= 0.6


def test_bf16_mixed_with_gradient_clipping_trains(tmp_path: Path) -> None:
    """bf16-mixed (what runtime.precision auto picks on a bf16 CPU, so make demo and the README example)
    with gradient clipping: Lightning's mixed-precision plugin refuses to clip for a fused optimizer."""
    cfg = tiny_config(
        tmp_path,
        planted_rule_log(tmp_path / "log.csv", n_users=40),
        **{"train.max_epochs": 1, "train.optimizer.grad_clip": 1e-3, "runtime.precision": "bf16-mixed"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without it warns that it is slow
        result = fit(cfg, prepared(cfg), write_bundle=False)
    assert result.precision == "bf16-mixed" and result.epochs == 1
    assert math.isfinite(result.history[-1]["train_loss"])
