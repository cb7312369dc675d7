"""Markdown reference of every config field, generated from the pydantic classes (README section)."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from recsys.config import AutoLoss, FullSoftmaxLoss, GBCELoss, RecsysConfig, SampledSoftmaxLoss

__all__ = ["config_reference"]

START = "<!-- CONFIG-REFERENCE:START -->"
END = "<!-- CONFIG-REFERENCE:END -->"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # a constrained type inside a union: int >= 2 | "auto"
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(annotation))}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "(section)"
    value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return "`" + json.dumps(value, default=str) + "`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, f"{key}."))
            continue
        rows.append(f"| `{key}` | {_type_name(annotation)} | {_default(field)} | {field.description or ''} |")
    return rows


def config_reference() -> str:
    """The reference tables (one per top-level section), as Markdown."""
    out: list[str] = []
    for section, field in RecsysConfig.model_fields.items():
        out.append(f"**`{section}`**\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        if section == "loss":
            for variant in (AutoLoss, FullSoftmaxLoss, SampledSoftmaxLoss, GBCELoss):
                out.extend(_rows(variant, "loss."))
        else:
            annotation = field.annotation
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
            out.extend(_rows(annotation, f"{section}."))
        out.append("")
    return "\n".join(out)


def update_readme(text: str) -> str:
    """``text`` with the section between the CONFIG-REFERENCE markers regenerated."""
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{config_reference()}\n{END}{tail}"


if __name__ == "__main__":
    import sys
    from pathlib import Path

    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    readme.write_text(update_readme(readme.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {readme}")
