"""Typed configuration, grouped by concern.

Every section is a pydantic model with ``extra="forbid"`` so that a misspelt key fails on load with its
dotted path, and every field carries a one-line description that doubles as documentation
(the README's config reference is generated from them; ``recsys config show`` prints a resolved
config). YAML files under ``configs/`` mirror these classes one to one.
"""

from recsys.config import sections as _sections
from recsys.config.loading import (
    apply_overrides,
    config_file,
    flatten,
    load_config,
    to_yaml,
    validate_config,
)
from recsys.config.sections import *  # noqa: F403  (exactly sections.__all__, listed once there)

__all__ = [
    *_sections.__all__,
    "apply_overrides",
    "config_file",
    "flatten",
    "load_config",
    "to_yaml",
    "validate_config",
]
