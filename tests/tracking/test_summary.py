"""Run descriptions and summary metrics from hand-written numbers."""

from __future__ import annotations

from recsys.tracking.summary import (
    TrainFacts,
    evaluate_description,
    headline_metrics,
    text_description,
    train_description,
    train_summary_metrics,
    with_test_result,
)

FACTS = TrainFacts(
    dataset="ml-latest-small",
    model_val={"ndcg@10": 0.061, "hr@10": 0.11, "mrr@10": 0.05},
    baselines={"most_popular": {"ndcg@10": 0.02, "hr@10": 0.04}, "transitions": {"ndcg@10": 0.052}},
    best_epoch=14,
    epochs=34,
    max_epochs=60,
    seconds=300.0,
    stopped_early=True,
    precision="bf16-mixed",
    model_name="models:/m-123",
    registered="models:/recsys-demo/1",
)


def test_train_description_leads_with_the_headline_numbers() -> None:
    text = train_description(FACTS)
    assert "Best validation NDCG@10 **0.0610** at epoch 14 (most popular 0.0200, transitions 0.0520)" in text
    assert "beats every baseline" in text
    assert text.startswith("Best validation NDCG@10")  # the run page shows the first lines only
    assert "BERT4Rec on **ml-latest-small**, 34 of 60 epochs, early stopping in 5.0 min" in text
    assert "registered as `models:/recsys-demo/1`" in text
    assert "| transitions | 0.0520 | – |" in text  # a missing value is a dash, not "nan"
    worse = TrainFacts(**{**FACTS.__dict__, "model_val": {"ndcg@10": 0.03}})
    assert "beats most popular only." in train_description(worse)


def test_train_summary_metrics_are_a_few_scalars() -> None:
    assert train_summary_metrics(FACTS) == {
        "best_epoch": 14.0,
        "epochs": 34.0,
        "train_minutes": 5.0,
        "most_popular_val_ndcg_at_10": 0.02,
        "transitions_val_ndcg_at_10": 0.052,
    }


def test_headline_metrics() -> None:
    metrics = {f"{m}@{k}": 0.1 for m in ("ndcg", "hr", "mrr", "recall", "coverage") for k in (5, 10)}
    assert list(headline_metrics(metrics, [10, 5])) == [
        "ndcg@5",
        "ndcg@10",
        "hr@5",
        "hr@10",
        "mrr@5",
        "mrr@10",
        "coverage@10",
    ]


def test_evaluate_description_and_the_test_line_on_the_training_run() -> None:
    metrics = {"bert4rec": {"ndcg@10": 0.05, "hr@10": 0.1}, "most_popular": {"ndcg@10": 0.02, "hr@10": 0.04}}
    text = evaluate_description(
        "test", metrics, [10], users=610, model="runs/demo/model", training_link="[train demo.yaml](#/x)"
    )
    assert "Test split, 610 users" in text
    assert "| **BERT4Rec** | 0.0500 | 0.1000 |" in text
    assert "trained by [train demo.yaml](#/x)" in text
    once = with_test_result("Best validation ...", {"ndcg@10": 0.05, "hr@10": 0.1}, "[eval](#/e1)")
    assert once.endswith("**Test** ([eval](#/e1)): NDCG@10 0.0500, HR@10 0.1000.")
    twice = with_test_result(once, {"ndcg@10": 0.06}, "[eval 2](#/e2)")
    assert twice.count("**Test**") == 1 and twice.endswith("NDCG@10 0.0600.")


def test_text_description_keeps_lines_and_drops_the_run_id() -> None:
    text = text_description("top-10 for 5 users\n\n2.0 s\nMLflow run: abc", preformatted="| a |")
    assert text == "top-10 for 5 users  \n2.0 s\n\n```\n| a |\n```"
