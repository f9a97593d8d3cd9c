"""Instantiating a run config's ``callbacks:`` section (shared by the families' builders)."""

from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig

from ..callbacks.compose import instantiate
from ..config.errors import ConfigError

__all__ = ["callback_nodes", "make_callback", "extra_callbacks"]


def callback_nodes(cfg: DictConfig) -> dict[str, Any]:
    """``{name: node}`` of the entries of ``cfg.callbacks`` (removed ones left out)."""
    section = cfg.get("callbacks") or {}
    return {name: section[name] for name in section if section[name] is not None}


def make_callback(cfg: DictConfig, name: str, **overrides: Any) -> Any:
    """The callback of entry ``name`` of ``cfg.callbacks``, ``overrides`` replacing its arguments, or None if absent.

    Raises:
        ConfigError: the entry does not build (a bad ``_target_``, an unknown or ill-typed argument).
    """
    node = callback_nodes(cfg).get(name)
    if node is None:
        return None
    try:
        return instantiate(node, key=f"callbacks.{name}", **overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def extra_callbacks(cfg: DictConfig, known: Mapping[str, Any] | set[str]) -> list[Any]:
    """The callbacks of every entry the family does not build itself (users' own, e.g. ``+callbacks.probe``)."""
    return [make_callback(cfg, name) for name in callback_nodes(cfg) if name not in known]
