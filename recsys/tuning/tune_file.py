"""Reading a tune file: base config + overrides, ``--set`` routing, validation with errors naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from recsys.config import ConfigError, RecsysConfig, apply_overrides, load_config
from recsys.tuning.space import TuneConfig, flatten_space

__all__ = ["TUNE_KEYS", "load_tune_config", "set_arg"]

TUNE_KEYS = ("base", "overrides", "study", "space")
"""Top-level keys of a tune file; a ``--set`` key starting with anything else overrides the base config."""


# ------------------------------------------------------------------------------------------ loading
def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid tune configuration ({origin}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "\n".join(lines)


def set_arg(key: str, value: Any) -> str:
    """``key=value`` for ``apply_overrides``, the value as YAML so floats, nulls and strings round-trip.

    (``json.dumps(1e-05)`` would give ``1e-05``, which YAML 1.1 reads as a string.)
    """
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def _resolve_base(base: Path, tune_file: Path) -> Path:
    for candidate in (tune_file.parent / base, base):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{tune_file}: base config {str(base)!r} not found (looked in {tune_file.parent} and the cwd)"
    )


def load_tune_config(path: str | Path, overrides: list[str] | None = None) -> tuple[TuneConfig, RecsysConfig]:
    """Read a tune file, apply ``--set`` overrides, validate it and its base config.

    ``--set`` keys under ``base``, ``overrides``, ``study`` or ``space`` change the tune file; any other
    key (``train.lr=...``) overrides the base config, after the file's own ``overrides``. Every space key
    is checked against ``RecsysConfig`` here, before any trial. Errors raise ``ConfigError`` naming the key.
    """
    tune_file = Path(path)
    if not tune_file.is_file():
        raise ConfigError(f"tune config not found: {tune_file}")
    try:
        raw = yaml.safe_load(tune_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{tune_file}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{tune_file}: expected a mapping at the top level")
    tune_sets = [s for s in overrides or [] if s.split("=", 1)[0].split(".")[0].strip() in TUNE_KEYS]
    base_sets = [s for s in overrides or [] if s not in tune_sets]
    if isinstance(raw.get("space"), dict):
        # Nested form first, so that `--set space.train.lr.high=...` lands in the dotted entry.
        raw["space"] = flatten_space(raw["space"])
    if tune_sets:
        raw = apply_overrides(raw, tune_sets)
    study = raw.setdefault("study", {})
    if isinstance(study, dict):
        study.setdefault("name", tune_file.stem)
    origin = str(tune_file) + (" + --set overrides" if tune_sets else "")
    try:
        tune = TuneConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None
    base_path = _resolve_base(tune.base, tune_file) if tune.base is not None else None
    sets = [set_arg(k, v) for k, v in tune.overrides.items()] + base_sets
    return tune, load_config(base_path, sets)
