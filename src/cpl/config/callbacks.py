"""The ``callbacks:`` section of a run config, composed from the top-level ``callbacks/*.yaml`` files.

Each file ``callbacks/<name>.yaml`` holds one node ``<name>: {_target_: ..., arg: value, ...}`` (the
layout of lightning-hydra-template's ``configs/callbacks/``). A family's schema lists the callbacks
its runs use by default, with arguments bound to its typed keys (``CALLBACKS`` in
``cpl.families.<kind>.schema``, e.g. ``task_switch.at_step: ${switch.at_step}``); the loader fills
``callbacks`` with them before merging a conf and its overrides, so ``switch.at_step=...`` keeps
working and ``callbacks.task_switch.at_step`` shows the resolved value. Confs and the command line
then change the set:

- ``callbacks=[singular_values,task_switch]``: exactly these (entries already composed keep their
  arguments, new names are read from their files, bound to the family's keys when it has a binding);
- ``defaults: [callbacks/NAME]`` in a conf: add ``NAME`` from its file;
- ``callbacks.NAME.ARG=value`` / ``+callbacks.NAME._target_=pkg.Class``: change or add an entry;
- ``~callbacks.NAME`` or ``callbacks.NAME=null``: remove one.

Nothing here imports torch: the families' builders instantiate the nodes
(:func:`cpl.callbacks.compose.instantiate`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError

__all__ = [
    "callbacks_dir",
    "available_callbacks",
    "read_callback",
    "family_callbacks",
    "select_callbacks",
    "check_callbacks",
    "is_default",
    "require_callback",
]


def callbacks_dir() -> Path:
    """The folder of callback files: ``$CPL_CALLBACKS_DIR``, else ``./callbacks`` next to ``./conf``, else
    the repository's."""
    env = os.environ.get("CPL_CALLBACKS_DIR")
    if env:
        return Path(env)
    here = Path.cwd() / "callbacks"
    if here.is_dir() and (Path.cwd() / "conf").is_dir():
        return here
    return Path(__file__).resolve().parents[3] / "callbacks"


def available_callbacks(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in Path(directory or callbacks_dir()).glob("*.yaml"))


def read_callback(name: str, directory: Path | None = None) -> DictConfig:
    """The node of ``callbacks/<name>.yaml``.

    Raises:
        ConfigError: no such file (the message lists the available ones), a file without its node.
    """
    directory = Path(directory or callbacks_dir())
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"Invalid value for 'callbacks': got {name!r}; allowed: a file of {directory}: "
            f"{', '.join(available_callbacks(directory)) or '(none)'}"
        )
    try:
        data = OmegaConf.load(path)
    except (OmegaConfBaseException, Exception) as exc:  # yaml errors
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, DictConfig) or name not in data or not isinstance(data[name], DictConfig):
        raise ConfigError(f"{path}: expected one top-level node '{name}:' with a '_target_'")
    return data[name]


def _bound(name: str, bindings: Mapping[str, Any]) -> DictConfig:
    node = read_callback(name)
    extra = bindings.get(name)
    return OmegaConf.merge(node, extra) if extra else node


def family_callbacks(bindings: Mapping[str, Mapping[str, Any]]) -> DictConfig:
    """The family's default ``callbacks`` section: each listed file, merged with its bindings."""
    return OmegaConf.create({name: _bound(name, bindings) for name in bindings})


def select_callbacks(current: Any, names: Sequence[Any], bindings: Mapping[str, Any], source: str) -> DictConfig:
    """``callbacks=[a, b]``: exactly these entries; composed ones keep their arguments."""
    if not all(isinstance(n, str) for n in names):
        raise ConfigError(
            f"Invalid value for 'callbacks' (from {source}): got {list(names)!r}; allowed: a list of callback file "
            f"names, e.g. [singular_values,task_switch] ({', '.join(available_callbacks())})"
        )
    have = current if isinstance(current, DictConfig) else {}
    return OmegaConf.create({n: have[n] if n in have and have[n] is not None else _bound(n, bindings) for n in names})


def check_callbacks(cfg: DictConfig) -> None:
    """Each entry of ``cfg.callbacks`` is null (removed) or a mapping with a ``_target_`` class path."""
    section = cfg.get("callbacks")
    if section is None:
        return
    for name in section:
        node = section[name]
        if node is None:
            continue
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if not isinstance(target, str) or "." not in target:
            got = OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else node
            raise ConfigError(
                f"Invalid value for 'callbacks.{name}': got {got!r}; "
                f"allowed: a mapping with '_target_: package.Class' and its arguments, e.g. "
                f"+callbacks.{name}._target_=mypkg.Probe"
            )


def is_default(cfg: DictConfig, bindings: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether ``cfg.callbacks`` is the family's default composition (unresolved: bindings compare as written)."""
    section = cfg.get("callbacks")
    if section is None:
        return True
    try:
        default = OmegaConf.to_container(family_callbacks(bindings), resolve=False)
    except ConfigError:
        return False
    return OmegaConf.to_container(section, resolve=False) == default


def require_callback(cfg: DictConfig, name: str, flag: str) -> None:
    """A run whose ``flag`` key is true needs the callback ``name`` in its ``callbacks``."""
    section = cfg.get("callbacks")
    if OmegaConf.select(cfg, flag) and section is not None and section.get(name) is None:
        raise ConfigError(
            f"Invalid value for 'callbacks': {flag}=true needs the callback '{name}'; got [{', '.join(section)}]. "
            f"Add it (callbacks=[...,{name}]) or set {flag}=false"
        )
