"""The ``evaluate`` job: same numbers as the protocol's ``evaluate``, baselines, sampled labels, breakdown
files, fingerprint checks, MLflow logging, and leakage checks on the evaluation protocol itself."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from mlflow import MlflowClient
from torch import Tensor

from recsys.cli import main
from recsys.config import RecsysConfig
from recsys.data.prepared import PreparedDataset
from recsys.evaluation.baselines import LastItemTransitions, MostPopular
from recsys.evaluation.protocol import Scorer
from recsys.evaluation.protocol import evaluate as protocol_evaluate
from recsys.inference.recommender import Recommender
from recsys.jobs import evaluate
from recsys.tracking.store import resolve_tracking_uri
from recsys.training.bundle import BundleError, load_bundle, save_bundle
from recsys.training.datamodule import training_data
from tests.inference.helpers import Setup, trained_setup, untrained_setup

FULL_KEYS = {"ndcg@10", "hr@10", "recall@10", "mrr@10", "map@10", "coverage@10", "popularity@10", "users"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return trained_setup(tmp_path_factory.mktemp("evaluate"))


def override(cfg: RecsysConfig, sets: dict[str, Any]) -> RecsysConfig:
    raw = cfg.model_dump(mode="json")
    for key, value in sets.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return RecsysConfig.model_validate(raw)


@pytest.fixture(scope="module")
def test_result(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> evaluate.EvaluateResult:
    cfg = override(setup.cfg, {"train.output_dir": str(tmp_path_factory.mktemp("eval_out"))})
    return evaluate.run(cfg, model=setup.bundle, data=setup.dataset.path, split="test")


# ------------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("split", ["test", "validation"])
def test_metrics_equal_the_protocol_directly(
    setup: Setup, split: Any, test_result: evaluate.EvaluateResult, tmp_path: Path
) -> None:
    if split == "test":
        result = test_result
    else:
        cfg = override(setup.cfg, {"train.output_dir": str(tmp_path)})
        result = evaluate.run(cfg, model=setup.bundle, data=setup.dataset.path, split=split)
    data = setup.dataset
    counts = data.item_counts()
    bundle = load_bundle(setup.bundle)
    train = data.history("train")
    scorers: dict[str, Scorer] = {
        "bert4rec": Recommender.load(bundle),
        "most_popular": MostPopular(counts, data.n_items),
        "last_item_transitions": LastItemTransitions(train, data.n_items, item_counts=counts),
    }
    assert list(result.metrics) == list(scorers)  # model first, then the baselines
    for name, scorer in scorers.items():
        direct = protocol_evaluate(
            scorer,
            data.history(split),
            data.targets(split),
            ks=setup.cfg.eval.ks,
            n_items=data.n_items,
            item_counts=counts,
            max_history=setup.cfg.model.max_len - 1,
        ).metrics
        assert result.metrics[name] == pytest.approx(direct, rel=1e-9), name
    assert result.users == len(data.targets(split)) == data.n_users
    assert set(result.metrics["bert4rec"]) >= FULL_KEYS
    # The planted rule is learnable: the model must beat popularity by far.
    assert result.metrics["bert4rec"]["ndcg@10"] > result.metrics["most_popular"]["ndcg@10"] + 0.2


def test_sampled_holdout_bundle_is_validated_on_its_sample_only(setup: Setup, tmp_path: Path) -> None:
    """A model trained with ``validation_holdout: sampled`` saw the other users' validation events: its
    validation split scores the held-out sample only, and the baselines fit on the same events."""
    bundle = load_bundle(setup.bundle)
    trained_cfg = override(bundle.config, {"train.val_users": 7, "train.validation_holdout": "sampled"})
    path = save_bundle(
        tmp_path / "model",
        bundle.model,
        trained_cfg,
        bundle.users,
        bundle.items,
        bundle.item_counts,
        data_fingerprint=bundle.manifest["data_fingerprint"],
    )
    cfg = override(setup.cfg, {"train.output_dir": str(tmp_path / "run")})
    result = evaluate.run(cfg, model=path, data=setup.dataset.path, split="validation")
    data = setup.dataset
    view = training_data(data, trained_cfg.train)
    assert result.users == len(view.val_targets) == 7
    train = view.history
    assert len(train.items) == len(data.history("train").items) + data.n_users - 7  # one event per user
    counts = np.bincount(train.items, minlength=data.n_items + 2)
    direct = protocol_evaluate(
        LastItemTransitions(train, data.n_items, item_counts=counts),
        data.history("validation"),
        view.val_targets,
        ks=setup.cfg.eval.ks,
        n_items=data.n_items,
        item_counts=data.item_counts(),
        max_history=setup.cfg.model.max_len - 1,
    ).metrics
    assert result.metrics["last_item_transitions"] == pytest.approx(direct, rel=1e-9)


def test_report_files_breakdowns_and_popularity(test_result: evaluate.EvaluateResult) -> None:
    out = test_result.output_dir
    for by in ("history_length", "target_popularity"):
        for ext in ("csv", "parquet", "png"):
            assert (out / f"breakdown_{by}.{ext}").is_file()
        table = pl.read_parquet(out / f"breakdown_{by}.parquet")
        assert set(table["model"]) == {"bert4rec", "most_popular", "last_item_transitions"}
        # User-weighted bucket means give back the overall metric.
        for model, values in test_result.metrics.items():
            rows = table.filter(pl.col("model") == model)
            ndcg, users = rows["ndcg@10"].to_numpy(), rows["users"].to_numpy()
            weighted = float((ndcg * users).sum() / users.sum())
            assert weighted == pytest.approx(values["ndcg@10"], abs=1e-9)
    popularity = pl.read_csv(out / "recommendation_popularity.csv")
    assert popularity["decile"].to_list() == list(range(1, 11))
    for column in ("catalogue_share", "bert4rec_share", "most_popular_share", "last_item_transitions_share"):
        assert popularity[column].sum() == pytest.approx(1.0)
    assert (out / "recommendation_popularity.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics.keys() == test_result.metrics.keys()
    for name, values in metrics.items():
        assert values == pytest.approx(test_result.metrics[name])
    assert pl.read_csv(out / "metrics.csv")["scorer"].to_list() == list(test_result.metrics)
    summary = test_result.summary()
    assert "bert4rec" in summary and "most_popular" in summary and "ndcg@10" in summary


def test_sampled_metrics_are_labelled_and_leave_full_ones_alone(
    setup: Setup, test_result: evaluate.EvaluateResult, tmp_path: Path
) -> None:
    cfg = override(setup.cfg, {"eval.sampled_negatives": 10, "train.output_dir": str(tmp_path)})
    result = evaluate.run(cfg, model=setup.bundle, data=setup.dataset.path)
    for name, values in result.metrics.items():
        sampled = {k for k in values if "sampled" in k}
        assert sampled and all(k.startswith("sampled_") for k in sampled)
        full = {k: v for k, v in values.items() if k not in sampled}
        assert full == pytest.approx(test_result.metrics[name])
    assert "NOT comparable" in result.summary()


def test_fingerprint_mismatch_warns_and_other_items_fail(setup: Setup, tmp_path: Path) -> None:
    bundle = load_bundle(setup.bundle)
    other = save_bundle(
        tmp_path / "model",
        bundle.model,
        bundle.config,
        bundle.users,
        bundle.items,
        bundle.item_counts,
        data_fingerprint="0" * 64,
    )
    cfg = override(setup.cfg, {"train.output_dir": str(tmp_path / "run")})
    with pytest.warns(UserWarning, match="DATA FINGERPRINT MISMATCH"):
        result = evaluate.run(cfg, model=other, data=setup.dataset.path)
    assert result.fingerprint_match is False and "WARNING" in result.summary()

    stranger = untrained_setup(tmp_path / "other", n_items=25)
    with pytest.raises(BundleError, match="not the items of"):
        evaluate.run(cfg, model=stranger.bundle, data=setup.dataset.path)


def test_cli_json_prints_one_object(setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--model", str(setup.bundle), "--data", str(setup.dataset.path), *setup.overrides()]
    args += ["--set", f"train.output_dir={tmp_path}", "--set", "eval.ks=[5,10]", "--json"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["split"] == "test" and payload["ks"] == [5, 10]
    assert set(payload["metrics"]) == {"bert4rec", "most_popular", "last_item_transitions"}
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--data", str(setup.dataset.path)]) == 2
    assert "model bundle not found" in capsys.readouterr().err


def test_cli_out_puts_the_artifacts_there(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "elsewhere"
    args = ["evaluate", "--model", str(setup.bundle), "--data", str(setup.dataset.path), *setup.overrides()]
    args += ["--set", f"train.output_dir={tmp_path / 'run'}", "--out", str(out), "--json"]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(payload["output_dir"]) == out
    assert (out / "metrics.csv").is_file()
    assert not (tmp_path / "run" / "evaluation").exists()


def test_tracked_run_has_metrics_and_breakdown_artifacts(
    setup: Setup, local_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = override(
        setup.cfg,
        {
            "tracking.enabled": True,
            "tracking.experiment": f"evaluate-{uuid.uuid4().hex[:8]}",
            "train.output_dir": str(local_store / "run"),
        },
    )
    result = evaluate.run(cfg, model=setup.bundle, data=setup.dataset.path)
    assert result.run_id is not None
    client = MlflowClient(resolve_tracking_uri(cfg.tracking))
    run = client.get_run(result.run_id)
    metrics = run.data.metrics
    # Headline charts only (the full table is evaluation/metrics.csv): the model's in test/, each
    # baseline's NDCG@10 and HR@10 in test.<name>/.
    assert metrics["test/ndcg_at_10"] == pytest.approx(result.metrics["bert4rec"]["ndcg@10"])
    assert metrics["test/coverage_at_20"] == pytest.approx(result.metrics["bert4rec"]["coverage@20"])
    assert metrics["test.most_popular/hr_at_10"] == pytest.approx(result.metrics["most_popular"]["hr@10"])
    assert "test.last_item_transitions/ndcg_at_10" in metrics
    assert not any("recall" in m or "popularity" in m for m in metrics)
    assert run.data.tags["pipeline"] == "evaluate" and run.data.tags["fingerprint_match"] == "true"
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "evaluation")}
    for name in (
        "breakdown_history_length.csv",
        "breakdown_history_length.png",
        "breakdown_target_popularity.parquet",
        "breakdown_target_popularity.png",
        "recommendation_popularity.png",
        "metrics.csv",
    ):
        assert f"evaluation/{name}" in artifacts


# ------------------------------------------------------------------------------------------ leakage
class TrainingOracle:
    """A scorer that memorised the training data: each user's own training items score highest, the items
    that followed them in that user's training sequence next, and popularity breaks the remaining ties.

    On the test split the model input is the training sequence plus the validation item, so everything it
    memorised is a seen item: with seen items excluded it can do no better than popularity.
    """

    def __init__(self, counts: np.ndarray, n_items: int) -> None:
        self.popular = MostPopular(counts, n_items)
        self.scale = float(counts.max()) + 1.0

    def scores(self, history: Tensor) -> Tensor:
        out = self.popular.scores(history) / self.scale  # [B, V], in [0, 1)
        successors = history[:, 1:].clone()
        successors[history[:, :-1] == 0] = 0  # a successor of padding is not a transition
        out.scatter_add_(1, successors, torch.ones_like(successors, dtype=out.dtype))
        out.scatter_(1, history, 100.0)
        return out


class TargetPeeker:
    """A leaky scorer that knows each user's test target (looked up by the user's history)."""

    def __init__(self, dataset: PreparedDataset) -> None:
        histories, targets = dataset.history("test"), dataset.targets("test")
        self.answers: dict[tuple[int, ...], set[int]] = {}
        for user, target in targets:
            self.answers.setdefault(tuple(histories.for_user(user).tolist()), set()).update(target.tolist())
        self.n_cols = dataset.n_items + 2

    def scores(self, history: Tensor) -> Tensor:
        out = torch.zeros(history.shape[0], self.n_cols)
        for row, items in enumerate(history.tolist()):
            for target in self.answers[tuple(i for i in items if i)]:
                out[row, target] = 1.0
        return out


def _test_metrics(dataset: PreparedDataset, scorer: Any) -> dict[str, float]:
    return protocol_evaluate(
        scorer,
        dataset.history("test"),
        dataset.targets("test"),
        ks=[10],
        n_items=dataset.n_items,
        item_counts=dataset.item_counts(),
    ).metrics


def test_memorising_the_training_data_gains_nothing_on_test(setup: Setup) -> None:
    data = setup.dataset
    oracle = _test_metrics(data, TrainingOracle(data.item_counts(), data.n_items))
    popular = _test_metrics(data, MostPopular(data.item_counts(), data.n_items))
    assert oracle["hr@10"] <= popular["hr@10"] + 0.02


def test_a_scorer_that_peeks_at_the_target_is_caught(setup: Setup) -> None:
    peeked = _test_metrics(setup.dataset, TargetPeeker(setup.dataset))
    assert peeked["hr@10"] == 1.0 and peeked["ndcg@10"] == 1.0


def test_no_target_is_in_an_earlier_splits_history_at_its_position(setup: Setup) -> None:
    data = setup.dataset
    events = data.interactions().select("user", "item", "split").collect()
    train, val_in, test_in = data.history("train"), data.history("validation"), data.history("test")
    val_t, test_t = data.targets("validation"), data.targets("test")
    for user, group in events.group_by("user", maintain_order=True):
        full = group["item"].to_list()
        assert group["split"].to_list() == [0] * (len(full) - 2) + [1, 2]  # leave-one-out, in time order
        user_id = int(user[0])
        assert test_t.for_user(user_id).tolist() == full[-1:]
        assert val_t.for_user(user_id).tolist() == full[-2:-1]
        # Each history is a strict prefix ending before its target's position.
        assert test_in.for_user(user_id).tolist() == full[:-1]
        assert val_in.for_user(user_id).tolist() == train.for_user(user_id).tolist() == full[:-2]
