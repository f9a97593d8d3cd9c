"""Loading ``conf/NAME.yaml``, composing confs, applying overrides and validating.

A conf names its model family with ``kind`` (``matcomp`` by default) and holds only what differs
from the family's schema defaults. A ``defaults:`` list composes it from other confs first (paths
relative to the conf folder, e.g. ``base/matcomp`` or ``overlays/quick``), each merged in order, the
conf's own keys last. Command-line ``key=value`` pairs are OmegaConf dotlist overrides. Every error
is a :class:`ConfigError` naming the key, the value and what is allowed, raised before any work.
This module imports no torch, Lightning or matplotlib (tested).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from .callbacks import check_callbacks, family_callbacks, read_callback, select_callbacks
from .errors import ConfigError
from .registry import family

__all__ = [
    "conf_dir",
    "available_confs",
    "read_conf",
    "load_config",
    "compose",
    "make_config",
    "parse_overrides",
    "validate",
    "max_steps",
    "flatten",
    "translate",
]


def conf_dir() -> Path:
    """The folder of conf files: ``$CPL_CONF_DIR``, else ``./conf``, else the repository's ``conf/``."""
    env = os.environ.get("CPL_CONF_DIR")
    if env:
        return Path(env)
    here = Path.cwd() / "conf"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[3] / "conf"


def available_confs(directory: Path | None = None) -> list[str]:
    """The runnable confs: the YAML files at the top of the conf folder (bases and overlays live in subfolders)."""
    directory = directory or conf_dir()
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def _allowed_keys(schema: type, dotted: str) -> list[str]:
    obj: Any = schema
    for part in [p for p in dotted.split(".") if p]:
        sub = {f.name: f for f in fields(obj)} if is_dataclass(obj) else {}
        if part not in sub:
            break
        default = sub[part].default_factory() if callable(sub[part].default_factory) else None  # type: ignore[misc]
        if default is None or not is_dataclass(default):
            break
        obj = type(default)
    return [f.name for f in fields(obj)] if is_dataclass(obj) else []


def _translate(exc: OmegaConfBaseException, schema: type, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or ""
    if isinstance(exc, ConfigKeyError) or "Key '" in str(exc) and "not in" in str(exc):
        parent, _, leaf = key.rpartition(".")
        allowed = _allowed_keys(schema, parent)
        close = difflib.get_close_matches(leaf, allowed, n=1)
        hint = f" Did you mean '{(parent + '.' if parent else '') + close[0]}'?" if close else ""
        return ConfigError(
            f"Unknown config key '{key}' (from {source}). Allowed keys"
            f"{' under ' + repr(parent) if parent else ''}: {', '.join(allowed)}.{hint}"
        )
    if isinstance(exc, ValidationError):
        return ConfigError(
            f"Config key '{key}' (from {source}) has value {exc.value!r} of the wrong type: "
            f"{str(exc.msg).splitlines()[0]}"
        )
    return ConfigError(f"Invalid config (from {source}): {exc}")


def translate(exc: OmegaConfBaseException, schema: type, source: str) -> ConfigError:
    """An OmegaConf merge error as a :class:`ConfigError` naming the key, the value and what is allowed."""
    key = getattr(exc, "full_key", None) or ""
    if isinstance(exc, ConfigKeyError) or "Key '" in str(exc) and "not in" in str(exc):
        parent, _, leaf = key.rpartition(".")
        allowed = _allowed_keys(schema, parent)
        close = difflib.get_close_matches(leaf, allowed, n=1)
        hint = f" Did you mean '{(parent + '.' if parent else '') + close[0]}'?" if close else ""
        return ConfigError(
            f"Unknown config key '{key}' (from {source}). Allowed keys"
            f"{' under ' + repr(parent) if parent else ''}: {', '.join(allowed)}.{hint}"
        )
    if isinstance(exc, ValidationError):
        return ConfigError(
            f"Config key '{key}' (from {source}) has value {exc.value!r} of the wrong type: "
            f"{str(exc.msg).splitlines()[0]}"
        )
    return ConfigError(f"Invalid config (from {source}): {exc}")


def _load_yaml(path: Path) -> DictConfig:
    try:
        node = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(node).__name__}")
    return node


def _compose_file(path: Path, directory: Path, seen: tuple[Path, ...]) -> DictConfig:
    """A conf file with its ``defaults`` merged in first."""
    if path in seen:
        chain = " -> ".join(p.stem for p in (*seen, path))
        raise ConfigError(f"{seen[-1]}: 'defaults' form a cycle ({chain})")
    node = _load_yaml(path)
    defaults = node.pop("defaults", None) if "defaults" in node else None
    if defaults is None:
        return node
    if not isinstance(defaults, ListConfig) or not all(isinstance(d, str) for d in defaults):
        raise ConfigError(
            f"Invalid value for 'defaults' (from {path}): got {defaults!r}; allowed: a list of conf paths, "
            "e.g. [base/matcomp]"
        )
    merged = OmegaConf.create()
    for name in defaults:
        if name.startswith("callbacks/"):  # a file of the top-level callbacks/ folder, under `callbacks:`
            callback = name.split("/", 1)[1]
            merged = OmegaConf.merge(merged, {"callbacks": {callback: read_callback(callback)}})
            continue
        target = directory / f"{name}.yaml"
        if not target.is_file():
            raise ConfigError(
                f"Invalid value for 'defaults' (from {path}): got {name!r}; allowed: a conf path under "
                f"{directory} (no such file {target})"
            )
        merged = OmegaConf.merge(merged, _compose_file(target, directory, (*seen, path)))
    return OmegaConf.merge(merged, node)


def read_conf(name: str, directory: Path | None = None) -> tuple[DictConfig, Path]:
    """The composed YAML of ``conf/<name>.yaml`` (its ``defaults`` merged in) and its path.

    Raises:
        ConfigError: no such conf (the message lists the confs), a YAML syntax error
            (``file:line: message``), a broken ``defaults`` list.
    """
    directory = Path(directory or conf_dir())
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"conf={name!r} not found in {directory}; available confs: "
            f"{', '.join(available_confs(directory)) or '(none)'}"
        )
    return _compose_file(path, directory, ()), path


def load_config(name: str, overrides: list[str] | tuple[str, ...] = (), directory: Path | None = None) -> DictConfig:
    """Load ``conf/<name>.yaml``, apply dotlist ``overrides`` and validate.

    A sweep conf (one with a ``sweep:`` section, read by :func:`cpl.sweep.load_sweep`) gives its
    base config here.

    Raises:
        ConfigError: unknown conf name (the message lists the available ones), unknown key,
            wrong type or impossible value.
    """
    raw, path = read_conf(name, directory)
    raw.pop("sweep", None)
    return compose(raw, parse_overrides(overrides), name, str(path))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """Parse ``key=value`` dotlist overrides into a config tree.

    Hydra's prefixes work for callbacks: ``+key=value`` adds a key (the same as ``key=value`` here)
    and ``~callbacks.NAME`` removes a callback (read as ``callbacks.NAME=null``).
    """
    removed = [o for o in overrides if o.startswith("~")]
    bad = [o for o in removed if "=" in o or not o[1:].startswith("callbacks.") or o.count(".") != 1]
    if bad:
        raise ConfigError(f"Could not parse overrides {bad}: '~' removes a callback, e.g. ~callbacks.task_switch")
    overrides = [o[1:] if o.startswith("+") else o for o in overrides if not o.startswith("~")]
    overrides += [f"{o[1:]}=null" for o in removed]
    malformed = [o for o in overrides if "=" not in o or not o.split("=", 1)[0].strip()]
    if malformed:
        raise ConfigError(f"Could not parse overrides {malformed}: use key=value, e.g. model.depth=4")
    selection = [o for o in overrides if o.split("=", 1)[0].strip() == "callbacks"]
    if selection and any(o.startswith("callbacks.") for o in overrides):
        # callbacks=[a,b] with callbacks.x.y=... : the selection goes first (see _merge), as callbacks._select_
        overrides = [o for o in overrides if o not in selection] + [
            f"callbacks._select_={selection[-1].split('=', 1)[1]}"
        ]
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"Could not parse overrides {list(overrides)}: {exc}. Use key=value, e.g. model.depth=4"
        ) from None


def compose(
    raw: DictConfig, over: DictConfig, name: str = "", source: str = "conf", over_source: str = "command line"
) -> DictConfig:
    """Merge a conf tree ``raw`` and an override tree ``over`` into the schema of their ``kind`` and validate.

    Raises:
        ConfigError: unknown kind or key, wrong type or impossible value (the message names
            ``source`` or ``over_source``).
    """
    kind = over.get("kind", raw.get("kind", "matcomp"))
    cfg = _merge(kind, ((raw, source), (over, over_source)))
    if not cfg.name:
        cfg.name = name
    validate(cfg)
    return cfg


def _merge(kind: Any, parts: tuple[tuple[DictConfig, str], ...]) -> DictConfig:
    """The schema of ``kind`` with its default callbacks, each part merged in turn (a ``callbacks``
    list selects entries, see :mod:`cpl.config.callbacks`), removed callbacks dropped."""
    fam = family(kind)
    schema, bindings = fam.config_class, fam.callbacks
    cfg = OmegaConf.structured(schema)
    if "callbacks" in cfg:
        cfg.callbacks = family_callbacks(bindings)
    for part, src in parts:
        section = part.get("callbacks", None)
        if isinstance(section, DictConfig):  # ~callbacks.NAME (NAME: null) removes a callback that must exist
            known = set(cfg.callbacks.keys()) if cfg.get("callbacks") is not None else set()
            for name, value in section.items_ex(resolve=False):
                if value is None and name not in known and name != "_select_":
                    raise ConfigError(
                        f"Invalid value for 'callbacks.{name}' (from {src}): got null (remove); allowed: one of the "
                        f"run's callbacks {sorted(known)}"
                    )
        if isinstance(section, ListConfig) or (isinstance(section, DictConfig) and "_select_" in section):
            part = part.copy()  # callbacks=[a, b]: select first, then merge the part's other keys
            names = part.pop("callbacks") if isinstance(section, ListConfig) else part.callbacks.pop("_select_")
            cfg.callbacks = select_callbacks(cfg.get("callbacks"), list(names), bindings, src)
        try:
            cfg = OmegaConf.merge(cfg, part)
        except OmegaConfBaseException as exc:
            raise translate(exc, schema, src) from None
    if cfg.get("callbacks") is not None:
        cfg.callbacks = {k: v for k, v in cfg.callbacks.items_ex(resolve=False) if v is not None}
    check_callbacks(cfg)
    return cfg


def make_config(kind: str = "matcomp", **overrides: Any) -> DictConfig:
    """Build a validated config from the schema defaults and nested ``overrides`` (for code and tests).

    >>> make_config(model={"depth": 4}).model.depth
    4
    """
    cfg = _merge(kind, ((OmegaConf.create(overrides), "arguments"),))
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Semantic checks of a merged config by its family (types were checked by the schema)."""
    family(cfg.kind).validate(cfg)


def max_steps(cfg: DictConfig) -> int:
    """Total number of gradient steps of a run, as its family counts them."""
    return family(cfg.kind).max_steps(cfg)


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """Flatten a config into ``{"model.depth": 3, ...}`` (MLflow params)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out
