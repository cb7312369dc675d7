"""Write the model bundle of one training checkpoint, to evaluate it like the bundle ``recsys train`` wrote.

``recsys train`` ships the best-validation epoch; this exports another checkpoint of the same run (its
``last.ckpt``, the final epoch) so both can be scored by ``recsys evaluate``. Pass the run's config and
``--set`` overrides: they define the architecture and the prepared dataset.

    python scripts/export_checkpoint.py runs/ml-1m/checkpoints/last.ckpt runs/ml-1m/last-model \\
        --config configs/ml-1m.yaml
    recsys evaluate --config configs/ml-1m.yaml --model runs/ml-1m/last-model --data prepared/ml-1m \\
        --out runs/ml-1m/evaluation/test-last
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys.config import load_config
from recsys.data.prepared import PreparedDataset
from recsys.training.fit import export_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", type=Path, help="A Lightning checkpoint of the run (best.ckpt, last.ckpt)."
    )
    parser.add_argument("out", type=Path, help="Bundle directory to write.")
    parser.add_argument("--config", type=Path, help="The run's YAML config.")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="The run's overrides."
    )
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    path = export_checkpoint(cfg, PreparedDataset.load(cfg.data.output_dir), args.checkpoint, args.out)
    print(f"bundle: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
