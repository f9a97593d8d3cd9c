"""The explicit registry of model families: ``kind`` -> the package that implements it.

A family is a package (``cpl.families.<kind>`` or any importable package) with

- ``schema`` (imports no torch): ``Config`` (the root dataclass, with a ``kind`` field),
  ``validate(cfg)`` (semantic checks raising :class:`~cpl.config.ConfigError`) and
  ``max_steps(cfg)``; a family whose runs can be members of one batched run also has
  ``MEMBER_SHARED_KEYS``, ``CHAIN_FREE_KEYS``, ``ONSET_KEY`` and optionally ``batchable(cfg)``
  (see :mod:`cpl.families.matcomp.schema` and :mod:`cpl.batching`);
- ``experiment``: ``build(cfgs, schedule=None) -> cpl.core.experiment.Experiment``, the module and
  callbacks of a run whose member e is ``cfgs[e]`` (a single run: one config);
- optionally ``summary``: the run's result at a glance (headline ``final/*`` metrics, a report
  printed at the end, tables logged as artifacts; see :attr:`Family.summary`).

Modules are imported on first use, so loading a config imports only the schemas. Adding a family
is adding its package and one line to :data:`FAMILIES` (or :func:`register_family` at run time).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .errors import ConfigError

__all__ = ["FAMILIES", "Family", "family", "register_family", "known_kinds"]

#: kind -> package of the family
FAMILIES: dict[str, str] = {
    "matcomp": "cpl.families.matcomp",
    "multipath": "cpl.families.multipath",
}


@dataclass(frozen=True)
class Family:
    """One registered family; its parts are imported on first access."""

    kind: str
    package: str

    def _part(self, name: str) -> ModuleType:
        return importlib.import_module(f"{self.package}.{name}")

    @property
    def schema(self) -> ModuleType:
        return self._part("schema")

    @property
    def experiment(self) -> ModuleType:
        return self._part("experiment")

    @property
    def summary(self) -> ModuleType | None:
        """The optional ``summary`` part: ``headline(cfg, module, member, metrics)`` (a few ``final/*``
        metrics), ``report(cfg, module, member)`` (text for the terminal) and ``tables(...)`` (artifacts)."""
        try:
            return self._part("summary")
        except ModuleNotFoundError as exc:
            if exc.name == f"{self.package}.summary":
                return None
            raise

    @property
    def config_class(self) -> type:
        return self.schema.Config

    def validate(self, cfg: Any) -> None:
        self.schema.validate(cfg)

    def max_steps(self, cfg: Any) -> int:
        return int(self.schema.max_steps(cfg))

    @property
    def callbacks(self) -> dict:
        """The family's default callbacks: file name in ``callbacks/`` -> arguments bound to its keys."""
        return dict(getattr(self.schema, "CALLBACKS", {}))

    @property
    def batch_keys(self) -> tuple[str, ...] | None:
        """Keys the members of one batched run share, or None if the family does not batch."""
        return getattr(self.schema, "MEMBER_SHARED_KEYS", None)


def known_kinds() -> list[str]:
    return sorted(FAMILIES)


def register_family(kind: str, package: str) -> None:
    """Register (or replace) the family ``kind`` implemented by ``package``."""
    FAMILIES[kind] = package


def family(kind: Any) -> Family:
    """The family of ``kind``.

    Raises:
        ConfigError: ``kind`` is not registered (the message lists the known kinds).
    """
    if kind not in FAMILIES:
        raise ConfigError(f"Invalid value for 'kind': got {kind!r}; allowed: {', '.join(known_kinds())}")
    return Family(kind, FAMILIES[kind])
