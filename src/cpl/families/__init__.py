"""Model families, one package each: ``matcomp`` (deep matrix factorisation, paper Sec. 4) and
``multipath`` (the two-pathway network, paper Sec. 3). :mod:`cpl.config.registry` names them.

The helpers below build a run's callbacks from its config's ``callbacks:`` section (composed from
``callbacks/*.yaml``, see :mod:`cpl.config.callbacks`) for the families' ``experiment.build``."""

from typing import Any, Mapping

from ..config.errors import ConfigError

__all__ = ["callback_nodes", "make_callback", "extra_callbacks"]


def callback_nodes(cfg: Any) -> dict[str, Any]:
    """``{name: node}`` of the entries of a run config's ``callbacks`` section (removed ones left out)."""
    section = cfg.get("callbacks") or {}
    return {name: section[name] for name in section if section[name] is not None}


def make_callback(cfg: Any, name: str, **overrides: Any) -> Any:
    """The callback of entry ``name`` of ``cfg.callbacks``, ``overrides`` replacing its arguments; None if absent.

    Raises:
        ConfigError: the entry does not build (a bad ``_target_``, an unknown or ill-typed argument).
    """
    from ..callbacks.compose import instantiate  # here: loading a family's schema imports no torch

    node = callback_nodes(cfg).get(name)
    if node is None:
        return None
    try:
        return instantiate(node, key=f"callbacks.{name}", **overrides)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def extra_callbacks(cfg: Any, known: Mapping[str, Any] | set[str]) -> list[Any]:
    """The callbacks of every entry the family does not build itself (users' own, e.g. ``+callbacks.probe``)."""
    return [make_callback(cfg, name) for name in callback_nodes(cfg) if name not in known]
