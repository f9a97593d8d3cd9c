"""Typed configuration: the family registry, shared schema sections, loading and validation.

Importing this package loads OmegaConf and the family schemas only (no torch, Lightning or
matplotlib), so ``--help`` and config errors answer at once.
"""

try:
    import omegaconf  # noqa: F401
except ImportError as exc:  # the core install has the callbacks only
    raise ImportError(
        "cpl's configs, runs and sweeps need the full install: pip install -e '.[all]' (the core install has "
        "the callbacks only)"
    ) from exc

from .errors import ConfigError, require
from .loader import (
    available_confs,
    compose,
    conf_dir,
    flatten,
    load_config,
    make_config,
    max_steps,
    parse_overrides,
    read_conf,
    translate,
    validate,
)
from .registry import FAMILIES, Family, family, register_family

__all__ = [
    "ConfigError",
    "FAMILIES",
    "Family",
    "available_confs",
    "compose",
    "conf_dir",
    "family",
    "flatten",
    "load_config",
    "make_config",
    "max_steps",
    "parse_overrides",
    "read_conf",
    "register_family",
    "require",
    "translate",
    "validate",
]
