"""Loading a config: YAML file + ``--set dotted.key=value`` overrides, validated, with errors that name
the key (and, for an unknown key, the closest real one); a flat dotted view and YAML out."""

from __future__ import annotations

import difflib
import typing
import weakref
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from recsys.config.sections import ConfigError, RecsysConfig

__all__ = ["apply_overrides", "config_file", "flatten", "load_config", "to_yaml", "validate_config"]

# id(config) -> the YAML file it was loaded from. Not a field (it would become a logged param and change
# equality) and not a pydantic private attribute (those take part in ``==`` too); dropped with the config.
_FILES: dict[int, Path] = {}


_BLOCK_INDICATORS = frozenset(a + b for a in "|>" for b in ("", "-", "+"))


def _parse_scalar(text: str) -> Any:
    """Parse an override value as YAML so that ``3``, ``1e-3``, ``true``, ``null``, ``[1, 2]`` work.

    A lone block-scalar indicator (``|``, ``>``) would parse as an empty string: it stays itself, so that
    ``feature_separator=|`` means ``"|"``.
    """
    if text.strip() in _BLOCK_INDICATORS:
        return text.strip()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a nested dict (a new dict is returned)."""
    import copy

    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected dotted.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_scalar(value)
    return out


def _section_classes(annotation: Any) -> list[type[BaseModel]]:
    """Config classes inside a field's type (one for a section, one per variant for the loss union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _section_classes(arg)]


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a config class (loss variants merged)."""
    paths: list[str] = []
    for name, info in model.model_fields.items():
        subs = _section_classes(info.annotation)
        if subs:
            paths.extend(p for sub in subs for p in _leaf_paths(sub, f"{prefix}{name}."))
        else:
            paths.append(f"{prefix}{name}")
    return list(dict.fromkeys(paths))


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    """' (did you mean <key>?)' for an unknown key at ``loc``: the same name elsewhere in the config (a
    moved setting such as train.lr -> train.optimizer.lr), else the closest sibling name."""
    model: type[BaseModel] = RecsysConfig
    path: list[str] = []
    variants: list[type[BaseModel]] = []
    for part in loc[:-1]:
        info = model.model_fields.get(str(part))
        if info is None:
            # A tagged-union step (``loss.<kind>``): pick the variant with that kind.
            chosen = [m for m in variants if m.model_fields["kind"].default == part]
            if not chosen:
                return ""
            model = chosen[0]
            continue
        path.append(str(part))
        variants = _section_classes(info.annotation)
        if not variants:
            return ""
        model = variants[0]
    key = str(loc[-1])
    moved = [p for p in _leaf_paths(RecsysConfig) if p.rsplit(".", 1)[-1] == key]
    if moved:
        return f" (did you mean {' or '.join(moved)}?)"
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {'.'.join([*path, close[0]])}?)" if close else ""


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        hint = _did_you_mean(tuple(e["loc"])) if e["type"] == "extra_forbidden" else ""
        lines.append(f"  {loc}: {e['msg']}{hint}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RecsysConfig:
    """Load a YAML config (or the defaults when ``path`` is None), apply overrides, validate."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        origin = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(loaded).__name__}")
        raw = loaded or {}
    if overrides:
        raw = apply_overrides(raw, overrides)
        origin += " + --set overrides"
    cfg = validate_config(raw, origin)
    if path is not None:
        _FILES[id(cfg)] = Path(path)
        weakref.finalize(cfg, _FILES.pop, id(cfg), None)
    return cfg


def validate_config(raw: dict[str, Any], origin: str = "a dict") -> RecsysConfig:
    """A nested dict as a validated config; a :class:`ConfigError` names each bad key (and ``origin``)."""
    try:
        return RecsysConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None


def config_file(cfg: RecsysConfig) -> Path | None:
    """The YAML file ``cfg`` was loaded from by :func:`load_config` (None for defaults or a built config).

    Run names say which config a run used (``train demo.yaml``); copies of a config do not carry it.
    """
    return _FILES.get(id(cfg))


def flatten(cfg: BaseModel, sep: str = ".") -> dict[str, Any]:
    """Flat dotted view of a config (for ``mlflow.log_params`` and manifests)."""

    def walk(prefix: str, value: Any, out: dict[str, Any]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{sep}{k}" if prefix else str(k), v, out)
        else:
            out[prefix] = value

    flat: dict[str, Any] = {}
    walk("", cfg.model_dump(mode="json"), flat)
    return flat


def to_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML (round-trips through ``load_config``)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
