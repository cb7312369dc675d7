"""The layering rules of docs/ARCHITECTURE: which package may import what, checked on every import
statement (function-level ones included) of every module under recsys/ and pipelines/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "recsys"

CORE = ("data", "model", "training", "evaluation", "inference")
"""Usable from a notebook with no MLflow, no Optuna and no CLI."""

NOT_IN_CORE = (
    "recsys.jobs",
    "recsys.tracking",
    "recsys.tuning",
    "recsys.cli",
    "mlflow",
    "optuna",
    "pipelines",
)

FORBIDDEN: dict[str, tuple[str, ...]] = {
    **{package: NOT_IN_CORE for package in CORE},
    # The model is pure torch: no Lightning, no dataframes, no I/O helpers of other packages.
    "model": (
        *NOT_IN_CORE,
        "pytorch_lightning",
        "lightning",
        "polars",
        "pyarrow",
        "recsys.data",
        "recsys.training",
    ),
    # The data side is polars/numpy/pyarrow: the torch side starts in recsys.training.
    "data": (*NOT_IN_CORE, "torch", "pytorch_lightning", "lightning", "recsys.model", "recsys.training"),
}


def imported_modules(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file (or in ``source`` as if it were that file);
    relative imports are resolved against the file's place in the tree."""
    text = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(text, filename=str(path))
    parts = path.relative_to(ROOT).with_suffix("").parts
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(parts[: len(parts) - node.level])
                found.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for line, module in imported_modules(path)
        for prefix in forbidden
        if _matches(module, prefix)
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_core_packages_keep_their_layer(package: str) -> None:
    files = sorted((PACKAGE / package).rglob("*.py"))
    assert files, f"recsys/{package} has no modules"
    problems = [v for f in files for v in violations(f, FORBIDDEN[package])]
    assert not problems, "\n".join(problems)


def test_nothing_in_recsys_imports_pipelines() -> None:
    problems = [v for f in sorted(PACKAGE.rglob("*.py")) for v in violations(f, ("pipelines",))]
    assert not problems, "\n".join(problems)


def test_pipelines_use_only_the_public_library() -> None:
    """The pipelines are scripts over recsys: no package of their own, no private recsys names."""
    scripts = sorted((ROOT / "pipelines").glob("*.py"))
    assert scripts, "pipelines/ holds no pipeline"
    assert not (ROOT / "pipelines" / "__init__.py").exists(), "pipelines/ must not be a package"
    for script in scripts:
        for line, module in imported_modules(script):
            private = _matches(module, "recsys") and any(p.startswith("_") for p in module.split("."))
            assert not private, f"{script}:{line}: {module}"


def test_the_checker_sees_function_level_and_relative_imports() -> None:
    """The rule must catch the ways an import hides: inside a function, or relative."""
    probe = PACKAGE / "data" / "probe.py"  # never written: its source is passed in
    source = "def f():\n    import mlflow.entities\n    from ..tracking import run\n    from . import vocab\n"
    assert imported_modules(probe, source) == [
        (2, "mlflow.entities"),
        (3, "recsys.tracking"),
        (4, "recsys.data"),
    ]
    found = [m for _, m in imported_modules(probe, source) if any(_matches(m, f) for f in FORBIDDEN["data"])]
    assert found == ["mlflow.entities", "recsys.tracking"]
    assert not _matches("mlflowx", "mlflow")
