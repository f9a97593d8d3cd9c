"""Typed ``key=value`` options of the commands that take no conf (``runs``, ``ui``, ``phase``).

The same syntax and the same one-line errors as a conf's overrides: the options are a dataclass
schema merged with the dotlist, so a misspelt key is named with the allowed ones.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config import ConfigError, parse_overrides, translate

__all__ = ["StoreOptions", "parse_options", "wants_help"]


@dataclass
class StoreOptions:
    #: MLflow store; null = $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db
    uri: Optional[str] = None
    experiment: str = "cpl"


def store_field(experiment: str = "cpl") -> Any:
    return field(default_factory=lambda: StoreOptions(experiment=experiment))


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help", "help") for a in argv)


def parse_options(argv: Sequence[str], schema: type, usage: str, check=None) -> tuple[Any, Optional[int]]:
    """``(options, None)``, or ``(None, exit code)`` after printing ``usage`` (0) or a one-line error (2).

    ``check(options)`` may raise :class:`~cpl.config.ConfigError` for values the types allow but the command does not.
    """
    if wants_help(argv):
        print(usage)
        return None, 0
    try:
        bad = [a for a in argv if "=" not in a]
        if bad:
            raise ConfigError(f"Arguments must be key=value, got {bad}; see --help")
        cfg = OmegaConf.structured(schema)
        try:
            cfg = OmegaConf.merge(cfg, parse_overrides(list(argv)))
        except OmegaConfBaseException as exc:
            raise translate(exc, schema, "command line") from None
        options = OmegaConf.to_object(cfg)
        if check is not None:
            check(options)
        return options, None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 2
