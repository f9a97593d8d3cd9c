"""Helpers for the small, checked contracts between cpl callbacks and LightningModules."""

from __future__ import annotations

from typing import Any


def require_attr(pl_module: Any, name: str, callback: str, what: str) -> Any:
    """Return ``pl_module.<name>`` or fail with a sentence naming the callback and the contract."""
    if not hasattr(pl_module, name):
        raise AttributeError(
            f"{callback} needs a LightningModule with {what} (`{name}`); {type(pl_module).__name__} has none."
        )
    return getattr(pl_module, name)


def resolve(pl_module: Any, attr: str, **kwargs: Any) -> Any:
    """``pl_module.<attr>``, called (with ``kwargs``) if it is a method."""
    value = getattr(pl_module, attr)
    return value(**kwargs) if callable(value) else value
