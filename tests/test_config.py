"""Config loading, validation, overrides, the flat view, every YAML in configs/, and README drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys.config import ConfigError, RecsysConfig, flatten, load_config, to_yaml
from recsys.config_docs import update_readme

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_validates(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, RecsysConfig)
    # The flat dotted view is complete: fed back as --set overrides it rebuilds the same config.
    overrides = [f"{k}={json.dumps(v)}" for k, v in flatten(cfg).items()]
    assert load_config(None, overrides) == cfg


def test_unknown_keys_are_rejected_with_their_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hidden_sise: 64\n")
    with pytest.raises(ConfigError, match=r"model\.hidden_sise"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"train\.bogus"):
        load_config(None, ["train.bogus=1"])


def test_overrides_parse_yaml_scalars() -> None:
    cfg = load_config(
        None,
        ["train.optimizer.lr=3e-4", "train.optimizer.grad_clip=null", "eval.ks=[5, 10]", "loss.kind=gbce"],
    )
    assert cfg.train.optimizer.lr == pytest.approx(3e-4)
    assert cfg.train.optimizer.grad_clip is None
    assert cfg.eval.ks == [5, 10]
    assert cfg.loss.kind == "gbce"
    assert load_config(None, ["runtime.precision=32"]).runtime.precision == "32"
    # A lone "|" is a YAML block-scalar indicator (an empty string): as a value it means itself.
    assert (
        load_config(None, ["data.item_features.feature_separator=|"]).data.item_features.feature_separator
        == "|"
    )


def test_cross_field_validation() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        load_config(None, ["model.hidden_size=66", "model.n_heads=4"])
    with pytest.raises(ConfigError, match="replace_mask"):
        load_config(None, ["masking.replace_mask=0.9", "masking.replace_random=0.2"])


def test_yaml_round_trip_and_flat_view(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.hidden_size=128", "loss.kind=sampled_softmax"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg
    flat = flatten(cfg)
    assert flat["model.hidden_size"] == 128 and flat["loss.n_negatives"] == 256


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_readme_config_reference_is_current() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert update_readme(readme) == readme, "run: .venv/bin/python -m recsys.config_docs README.md"


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("model.hiden_size=64", "did you mean model.hidden_size?"),  # a typo: the closest sibling
        ("train.lr=0.01", "did you mean train.optimizer.lr?"),  # a moved setting: where it lives now
        ("train.accelerator=cpu", "did you mean runtime.accelerator?"),
        ("train.schedule.warmup=5", "did you mean train.schedule.warmup_steps?"),
        ("trian.max_epochs=3", "did you mean train?"),
    ],
)
def test_an_unknown_key_names_the_closest_real_one(override: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert hint in str(err.value)


def test_a_key_with_no_near_match_gets_no_guess() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.zzzzqqq=1"])
    assert "model.zzzzqqq" in str(err.value) and "did you mean" not in str(err.value)


def test_runtime_holds_the_hardware_and_train_does_not() -> None:
    cfg = load_config(None, ["runtime.devices=2", "runtime.num_workers=1", "train.schedule.kind=cosine"])
    assert (cfg.runtime.devices, cfg.runtime.num_workers, cfg.runtime.precision) == (2, 1, "auto")
    assert cfg.train.schedule.kind == "cosine"
    hardware = {"accelerator", "devices", "strategy", "num_nodes", "threads", "precision", "num_workers"}
    assert not hardware & set(type(cfg.train).model_fields)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.ks=[0]", r"eval\.ks: .*every cut-off must be >= 1.*\[0\]"),
        ("eval.ks=[10, -5]", r"eval\.ks: .*\[-5\]"),
        ("eval.ks=[]", r"eval\.ks: List should have at least 1 item"),
        ("inference.k=0", r"inference\.k: Input should be greater than or equal to 1"),
        ("train.optimizer.lr=.inf", r"train\.optimizer\.lr: Input should be a finite number"),
        ("train.optimizer.lr=-.inf", r"train\.optimizer\.lr: Input should be a finite number"),
        ("train.optimizer.lr=.nan", r"train\.optimizer\.lr: Input should be a finite number"),
        ("train.optimizer.lr=0", r"train\.optimizer\.lr: Input should be greater than 0"),
        ("train.optimizer.lr=-0.001", r"train\.optimizer\.lr: Input should be greater than 0"),
    ],
)
def test_impossible_cutoffs_and_learning_rates_fail_at_load(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
    good = load_config(None, ["eval.ks=[1, 3]", "inference.k=1", "train.optimizer.lr=1e-5"])
    assert good.eval.ks == [1, 3] and good.inference.k == 1


def test_warmup_steps_in_a_config_are_not_overridden_by_the_default_fraction() -> None:
    from recsys.training.schedule import warmup_steps

    def warmup(*sets: str) -> int:
        return warmup_steps(load_config(None, list(sets)).train.schedule, 1000)

    assert warmup() == 50  # the default: a share (5%) of the schedule
    assert warmup("train.schedule.warmup_steps=100") == 100
    both = ("train.schedule.warmup_steps=30", "train.schedule.warmup_fraction=0.1")
    assert warmup(*both) == 100  # both written: the fraction (10% of 1000) wins, as documented
    assert warmup("train.schedule.warmup_fraction=0.2") == 200
    # A dumped config reloads to the same schedule, and a step count set on a dump (a tuning trial) counts.
    dumped = load_config(None).model_dump(mode="json")
    assert RecsysConfig.model_validate(dumped).train.schedule == load_config(None).train.schedule
    dumped["train"]["schedule"]["warmup_steps"] = 25
    assert warmup_steps(RecsysConfig.model_validate(dumped).train.schedule, 1000) == 25
