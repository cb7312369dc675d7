"""Quality on a dataset: the library's defaults, a time budget, test metrics next to the published ones.

Trains BERT4Rec with the defaults plus only what a dataset needs to be read (its path and format; for
ml-latest-small the demo's data section: column names, 5-core, first of repeated ratings) and
``train.time_budget_minutes``, through the same ``train`` and ``evaluate`` jobs as ``recsys train`` and
``recsys evaluate``. Then prints one row per model (BERT4Rec, last-item transitions, most popular) with
full-ranking test NDCG@10 and HR@10 (leave-one-out, all users, seen items excluded), the published
figures for that dataset (../shared/data/README.md) and the CPU it ran on.

    .venv/bin/python bench/bench_quality.py --dataset ml-1m --budget-minutes 60
    .venv/bin/python bench/bench_quality.py --dataset amazon-toys --budget-minutes 20 --json
    .venv/bin/python bench/bench_quality.py --dataset ml-latest-small --budget-minutes 5 \
        --set masking.window=sliding

``--set`` overrides any config key (a deviation from the defaults: it is printed with the result);
``--config FILE`` starts from a config file instead of the defaults. Tracking is off unless
``--set tracking.enabled=true``. Budget: training and validation; preparing the data and the final test
evaluation come on top (both are timed and printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, cpu_model, shared_data

DATASETS: dict[str, dict[str, Any]] = {
    "ml-1m": {
        "data.source.path": "ml-1m/ml-1m.txt",
        "data.source.format": "sasrec_txt",
        # The movies' genres from the official movies.dat, through the renumbering of ml-1m.txt.
        "data.item_features.path": "ml-1m/movies.dat",
        "data.item_features.id_map": "ml-1m/ml-1m.itemmap.tsv",
    },
    "amazon-toys": {
        "data.source.path": "amazon-toys/Toys_and_Games.txt",
        "data.source.format": "sequence_per_line",
        # The items' categories and brand, shipped with the log (`--set data.item_features.path=null`: none).
        "data.item_features.path": "amazon-toys/Toys_and_Games_item2attributes.json",
    },
    "amazon-games": {"data.source.path": "amazon-games/Video.txt", "data.source.format": "sasrec_txt"},
    # The bundled sample, read as the demo reads it (configs/demo.yaml's data section).
    "ml-latest-small": {
        "data.source.path": str(ROOT / "data" / "ml-latest-small" / "ratings.csv"),
        "data.source.format": "auto",
        "data.source.columns.user": "userId",
        "data.source.columns.item": "movieId",
        "data.source.columns.rating": "rating",
        "data.cleaning.min_user_interactions": 5,
        "data.cleaning.min_item_interactions": 5,
        "data.cleaning.duplicates": "keep_first",
    },
}

PUBLISHED: dict[str, list[tuple[str, float, float, str]]] = {
    # (model, NDCG@10, HR@10, source), full ranking, leave-one-out, all users: ../shared/data/README.md
    "ml-1m": [
        ("BERT4Rec, original code, 400k steps", 0.0806, 0.1518, "Petrov & Macdonald, RecSys 2022"),
        ("BERT4Rec, RecBole", 0.0546, 0.1061, "Petrov & Macdonald, RecSys 2022"),
        ("BERT4Rec, HuggingFace version, length 100", 0.1516, 0.2821, "Petrov & Macdonald, RecSys 2022"),
        ("BERT4Rec, full softmax, 200 epochs", 0.1537, 0.2843, "Klenitskiy & Vasilev, RecSys 2023"),
        ("BERT4Rec, RecTools", 0.1618, 0.2921, "RecTools benchmark"),
        ("SASRec+ (full cross-entropy)", 0.1821, 0.3152, "Klenitskiy & Vasilev, RecSys 2023"),
        ("SASRec+ with 3000 sampled negatives", 0.1857, 0.3159, "Klenitskiy & Vasilev, RecSys 2023"),
        ("HSTU-large", 0.1893, 0.3294, "Zhai et al., ICML 2024"),
    ],
    "amazon-toys": [
        ("TIGER, as reported", 0.0432, 0.0712, "eSASRec benchmark README"),
        ("eSASRec", 0.0538, 0.0939, "eSASRec benchmark (Tikhonovich et al., RecSys 2025)"),
        ("SASRec+SS (sampled softmax)", 0.0580, 0.0970, "eSASRec benchmark"),
        ("ELECRec, released checkpoint", 0.0634, 0.0997, "YChen1993/ELECRec README"),
    ],
    "amazon-games": [],
    "ml-latest-small": [],
}
MODELS = {
    "bert4rec": "BERT4Rec",
    "last_item_transitions": "last-item transitions",
    "most_popular": "most popular",
}


def build_config(args: argparse.Namespace, work: Path) -> Any:
    """Defaults (or ``--config``) + the dataset's source + the budget + where things go + ``--set``."""
    from recsys.config import load_config

    sets = dict(DATASETS[args.dataset])
    for key in ("data.source.path", "data.item_features.path", "data.item_features.id_map"):
        if key in sets:
            path = Path(sets[key])
            sets[key] = str(path if path.is_absolute() else shared_data() / path)
    sets.update(
        {
            "data.output_dir": str(work / "prepared"),
            "train.output_dir": str(work / "run"),
            "train.time_budget_minutes": args.budget_minutes,
            "runtime.progress_bar": False,
            "tracking.enabled": False,
        }
    )
    overrides = [f"{k}={v}" for k, v in sets.items()] + list(args.set)
    return load_config(args.config, overrides)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train, evaluate on test, and gather the result object (what ``--json`` prints)."""
    import torch

    from recsys.jobs import evaluate, train

    cfg = build_config(args, work)
    started = time.perf_counter()
    trained = train.run(cfg)
    train_s = time.perf_counter() - started
    assert trained.fit.bundle_path is not None
    tested = evaluate.run(
        cfg, model=trained.fit.bundle_path, data=trained.prepared.path, split="test", out=work / "test"
    )
    validation = {"bert4rec": trained.model_val, **trained.baselines}
    rows = []
    for key, name in MODELS.items():
        metrics = tested.metrics[key]
        val = validation.get("transitions" if key == "last_item_transitions" else key, {})
        rows.append(
            {
                "model": name,
                "test_ndcg@10": metrics["ndcg@10"],
                "test_hr@10": metrics["hr@10"],
                "val_ndcg@10": val.get("ndcg@10"),
            }
        )
    return {
        "bench": "quality",
        "dataset": args.dataset,
        "budget_minutes": args.budget_minutes,
        "overrides": list(args.set),
        "config": str(args.config) if args.config else None,
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "precision": trained.fit.precision,
        "users": tested.users,
        "rows": rows,
        "published": [
            {"model": m, "test_ndcg@10": n, "test_hr@10": h, "source": s}
            for m, n, h, s in PUBLISHED[args.dataset]
        ],
        "derived": trained.fit.derived,
        "epochs": trained.fit.epochs,
        "best_epoch": trained.fit.best_epoch,
        "stopped_early": trained.fit.stopped_early,
        "seconds": {
            "prepare_train_validate": round(train_s, 1),
            "fit": round(trained.fit.seconds, 1),
            "test_evaluation": round(tested.seconds, 1),
        },
    }


def table(result: dict[str, Any]) -> str:
    """The human-readable report: our rows, then the published ones, then how it ran."""
    head = f"{'model':<48}{'NDCG@10':>9}{'HR@10':>9}{'val NDCG@10':>13}"
    lines = [
        f"== quality: {result['dataset']}, time budget {result['budget_minutes']:g} min, "
        f"test split ({result['users']:,} users, full ranking, seen items excluded) ==",
        head,
    ]
    for row in result["rows"]:
        val = row["val_ndcg@10"]
        shown = f"{val:>13.4f}" if val is not None else f"{'':>13}"
        lines.append(f"{row['model']:<48}{row['test_ndcg@10']:>9.4f}{row['test_hr@10']:>9.4f}{shown}")
    if result["published"]:
        lines.append("published (same protocol):")
        for row in result["published"]:
            label = f"  {row['model']}"
            lines.append(f"{label:<48}{row['test_ndcg@10']:>9.4f}{row['test_hr@10']:>9.4f}  {row['source']}")
    else:
        lines.append("published: no full-ranking figure for this dataset")
    derived = ", ".join(f"{k} {v}" for k, v in result["derived"].items() if v is not None)
    secs = result["seconds"]
    lines += [
        f"derived: {derived}",
        f"trained {result['epochs']} epochs (best {result['best_epoch']}"
        + (", early stop" if result["stopped_early"] else "")
        + f"), fit {secs['fit']} s, prepare+train+validate {secs['prepare_train_validate']} s, "
        f"test evaluation {secs['test_evaluation']} s",
        f"CPU: {result['cpu']}, {result['threads']} threads, precision {result['precision']}",
    ]
    if result["overrides"] or result["config"]:
        lines.append(f"deviations from the defaults: config {result['config']}, --set {result['overrides']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--budget-minutes", type=float, required=True, help="train.time_budget_minutes")
    parser.add_argument("--json", action="store_true", help="Print the result as one JSON object.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Config override.")
    parser.add_argument("--config", type=Path, help="Start from this config instead of the defaults.")
    parser.add_argument("--workdir", type=Path, help="Keep the prepared data, run and bundle here.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from recsys import console

    console.setup()  # the CLI's log lines on stderr, Lightning's banner and known warnings dropped
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        work = args.workdir or Path(tmp)
        result = run(args, work)
    if args.json:
        print(json.dumps(result))
    else:
        print(table(result))
        print("BENCH " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
