"""``--resume`` checks on a real checkpoint: missing file, other model/objective settings (each key named,
both values shown), other data; settings that only say how long or where to train may change."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import RecsysConfig
from recsys.training.fit import fit
from recsys.training.resume import ResumeError, ResumeRecord, check_resume, checkpoint_callback_state
from tests.training.helpers import planted_rule_log, prepared, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RecsysConfig, Path]:
    root = tmp_path_factory.mktemp("resume")
    cfg = tiny_config(root, planted_rule_log(root / "log.csv", n_users=40), **{"train.max_epochs": 1})
    result = fit(cfg, prepared(cfg), write_bundle=False)
    return cfg, result.last_checkpoint


def _with(cfg: RecsysConfig, **sets: object) -> RecsysConfig:
    return tiny_config(
        Path(cfg.train.output_dir).parent, cfg.data.source.path, **{"train.max_epochs": 1, **sets}
    )


def test_missing_checkpoint_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, tmp_path / "log.csv")
    with pytest.raises(ResumeError, match=r"no checkpoint to resume from at .*last\.ckpt.*without --resume"):
        check_resume(cfg, tmp_path / "run" / "checkpoints" / "last.ckpt")


def test_the_checkpoint_records_the_shaping_config(trained: tuple[RecsysConfig, Path]) -> None:
    cfg, last = trained
    record = checkpoint_callback_state(last, ResumeRecord.__qualname__)
    assert record is not None
    assert record["config"]["model.hidden_size"] == "32" and len(record["config_fingerprint"]) == 64
    assert "train.max_epochs" not in record["config"] and "runtime.threads" not in record["config"]
    check_resume(cfg, last, record["data_fingerprint"])  # the same config and data: accepted


def test_other_model_or_optimiser_settings_are_named(trained: tuple[RecsysConfig, Path]) -> None:
    cfg, last = trained
    changed = _with(cfg, **{"model.hidden_size": 16, "train.optimizer.lr": 0.5, "loss.kind": "gbce"})
    with pytest.raises(ResumeError) as info:
        check_resume(changed, last)
    message = str(info.value)
    assert "model.hidden_size: 32 -> 16" in message
    assert "train.optimizer.lr: 0.01 -> 0.5" in message
    assert f'loss.kind: "{cfg.loss.kind}" -> "gbce"' in message
    assert "loss.t: (absent) -> 0.75" in message  # a key only the new loss has


def test_how_long_and_where_may_change(trained: tuple[RecsysConfig, Path]) -> None:
    cfg, last = trained
    longer = _with(cfg, **{"train.max_epochs": 9, "train.patience": 2, "runtime.threads": 2})
    check_resume(longer, last)


def test_auto_settings_are_left_to_fit(trained: tuple[RecsysConfig, Path]) -> None:
    """The job checks before the data is read, when an `auto` value is not known yet: it is compared
    once fit has resolved it (against the checkpoint's resolved value)."""
    cfg, last = trained
    autos = {"model.dropout": "auto", "train.batch_size": "auto", "train.optimizer.item_weight_decay": "auto"}
    check_resume(_with(cfg, **autos), last)
    with pytest.raises(ResumeError, match=r"model\.dropout: 0\.0 -> 0\.2"):
        check_resume(_with(cfg, **{**autos, "model.dropout": 0.2}), last)


def test_other_data_is_refused(trained: tuple[RecsysConfig, Path]) -> None:
    cfg, last = trained
    with pytest.raises(ResumeError, match=r"trained on other data \(fingerprint [0-9a-f]{12}\.\.\."):
        check_resume(cfg, last, "0" * 64)


def test_fit_resume_refuses_before_training(trained: tuple[RecsysConfig, Path], tmp_path: Path) -> None:
    cfg, _ = trained
    fresh = tiny_config(tmp_path, cfg.data.source.path, **{"data.output_dir": str(cfg.data.output_dir)})
    with pytest.raises(ResumeError, match="no checkpoint"):
        fit(fresh, prepared(fresh), resume=True)
    assert not (tmp_path / "run").exists()  # nothing written, not even the lock's folder
