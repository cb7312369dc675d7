"""The README's registry snippet runs as written after a demo training (the shipped configs/demo.yaml
registers ``recsys-demo``), on the bundled sample with a one-epoch budget in a fresh local store."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recsys.config import load_config
from recsys.jobs import train

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # prepares ml-latest-small and trains one epoch: about 40 s on 2 busy cores


def _snippet() -> str:
    """The README's python block that loads ``models:/recsys-demo/1``."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if "models:/recsys-demo/1" in b]
    return str(block)


def _run(code: str) -> Any:
    """Execute ``code`` and return the value of its last line (an expression, as in a notebook)."""
    tree = ast.parse(code)
    last = tree.body.pop()
    assert isinstance(last, ast.Expr), "the snippet should end with an expression"
    scope: dict[str, Any] = {}
    exec(compile(tree, "README.md", "exec"), scope)
    return eval(compile(ast.Expression(last.value), "README.md", "eval"), scope)


def test_readme_registry_snippet_works_after_the_demo(local_store: Path) -> None:
    sets = {
        "data.source.path": str(ROOT / "data" / "ml-latest-small" / "ratings.csv"),
        "data.item_features.path": str(ROOT / "data" / "ml-latest-small" / "movies.csv"),
        "data.output_dir": str(local_store / "prepared" / "demo"),
        "train.output_dir": str(local_store / "runs" / "demo"),
        "train.max_epochs": 1,
        "train.batch_size": 256,
        "model.hidden_size": 16,
        "model.n_layers": 1,
        "model.max_len": 50,
        "runtime.precision": "32",
        "runtime.progress_bar": "false",
    }
    cfg = load_config(ROOT / "configs" / "demo.yaml", [f"{k}={v}" for k, v in sets.items()])
    assert cfg.tracking.registered_model == "recsys-demo"  # the shipped demo config registers
    result = train.run(cfg)
    assert result.registered_version == "1"

    recommendations = _run(_snippet())
    assert isinstance(recommendations, pd.DataFrame)
    assert list(recommendations.columns) == ["user_id", "item_id", "score", "rank"]
    assert recommendations["user_id"].tolist() == [1] * 10 + [2] * 10
    assert recommendations["rank"].tolist() == list(range(1, 11)) * 2
