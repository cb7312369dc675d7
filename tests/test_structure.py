"""Bar 3 of issue 11, as far as a test can hold it: no module of the library over 400 lines, and no
function over 60 lines unless its docstring says why ("long, but ..."). ``duplicates recsys`` (a tool,
not a test) covers the third part, repeated logic."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
EXCUSE = "long, but"


def _modules() -> list[Path]:
    return sorted((ROOT / "recsys").rglob("*.py"))


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not long, long


def test_no_function_over_60_lines_without_a_reason() -> None:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES and EXCUSE not in (ast.get_docstring(node) or ""):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not found, "\n".join(found)
