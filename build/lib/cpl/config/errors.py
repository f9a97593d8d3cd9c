"""The one error type of configuration problems, and the one phrasing of its messages."""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "require"]


class ConfigError(ValueError):
    """A configuration value is missing, misspelt, of the wrong type or impossible."""


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a :class:`ConfigError` in the project's one phrasing unless ``ok``.

    >>> require(False, "model.depth", 0, "an integer >= 1")
    Traceback (most recent call last):
    ...
    cpl.config.errors.ConfigError: Invalid value for 'model.depth': got 0; allowed: an integer >= 1
    """
    if not ok:
        raise ConfigError(f"Invalid value for '{key}': got {value!r}; allowed: {allowed}")
