"""The nightly pipeline: prepare -> train -> evaluate -> register -> recommend, over ``recsys.jobs``.

A scheduler runs it as a script::

    python pipelines/nightly.py --config configs/demo.yaml --out recommendations/nightly

Registration is the train job's: with ``tracking.registered_model`` set, the trained model becomes a new
version of that registered model, and the recommendations are made from that version (what a serving
system would load); otherwise from the bundle directory. Every step is its own MLflow run.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from recsys import console
from recsys.config import RecsysConfig, load_config
from recsys.jobs import evaluate, prepare, recommend, train


@dataclass
class NightlyResult:
    """What each step produced."""

    prepared: prepare.PrepareResult
    trained: train.TrainResult
    evaluated: evaluate.EvaluateResult
    model: str
    recommended: recommend.RecommendResult


def nightly(cfg: RecsysConfig, *, out: str | Path) -> NightlyResult:
    """Run the chain once; each step raises on bad input before writing anything."""
    prepared = prepare.run(cfg)
    trained = train.run(cfg)
    bundle = trained.fit.bundle_path
    if bundle is None:
        raise RuntimeError("training wrote no model bundle")
    evaluated = evaluate.run(cfg, model=bundle, data=prepared.path, split="test")
    name, version = cfg.tracking.registered_model, trained.registered_version
    model = f"models:/{name}/{version}" if name and version else str(bundle)
    recommended = recommend.run(cfg, model=model, users="all", out=out)
    return NightlyResult(prepared, trained, evaluated, model, recommended)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="YAML config file (configs/*.yaml).")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Config override.")
    parser.add_argument("--out", type=Path, required=True, help="Directory of the recommendations.")
    args = parser.parse_args(argv)
    console.setup()  # log lines on stderr, third-party noise dropped, as the recsys CLI
    result = nightly(load_config(args.config, [*console.stream_overrides(), *args.set]), out=args.out)
    print(result.trained.summary(), result.evaluated.summary(), result.recommended.summary(), sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
