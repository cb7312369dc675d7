"""The batch top-k pipeline: recommendations for every user (or a list of users) of a model, as parquet.

A scheduler runs it as a script::

    python pipelines/batch_topk.py --config configs/demo.yaml --model models:/recsys-demo/3 \
        --out recommendations/today

It is ``recsys.jobs.recommend.run`` with the users' full histories from the prepared dataset
(``data.output_dir``), ``inference.k`` items each, already-seen items excluded; the output directory is
replaced atomically, so readers never see half a day's recommendations.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsys import console
from recsys.config import RecsysConfig, load_config
from recsys.jobs import recommend


def batch_topk(
    cfg: RecsysConfig, *, model: str | Path, out: str | Path, users: str | Path = "all"
) -> recommend.RecommendResult:
    """Top ``inference.k`` items for ``users`` (``"all"`` or a file of user ids), written to ``out``."""
    return recommend.run(cfg, model=model, users=users, out=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="YAML config file (configs/*.yaml).")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Config override.")
    parser.add_argument("--model", required=True, help="Model bundle directory or models:/name/version.")
    parser.add_argument("--out", type=Path, required=True, help="Output directory (parquet parts).")
    parser.add_argument("--users", default="all", help="'all' or a file of user ids.")
    args = parser.parse_args(argv)
    console.setup()  # log lines on stderr, third-party noise dropped, as the recsys CLI
    result = batch_topk(
        load_config(args.config, [*console.stream_overrides(), *args.set]),
        model=args.model,
        out=args.out,
        users=args.users,
    )
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
